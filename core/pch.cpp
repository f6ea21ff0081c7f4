// Compiles the shared precompiled LibTorch header (see cmake/Dependencies.cmake).
