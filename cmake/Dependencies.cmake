# All third-party packages are found here, once. Package names are those of Debian bookworm's
# -dev packages (launch/install_deps.sh) and of the GPU machine's Ubuntu packages.
find_package(Torch REQUIRED)
# LibTorch from PyTorch 2.12 on needs C++20 for code that includes ATen; older ones need C++17.
if(Torch_VERSION VERSION_GREATER_EQUAL 2.12)
  set(CMAKE_CXX_STANDARD 20)
endif()
find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
# yaml-cpp 0.8 exports yaml-cpp::yaml-cpp (the bare name is deprecated); 0.7 (Debian) only yaml-cpp.
add_library(tessera_yaml INTERFACE)
if(TARGET yaml-cpp::yaml-cpp)
  target_link_libraries(tessera_yaml INTERFACE yaml-cpp::yaml-cpp)
else()
  target_link_libraries(tessera_yaml INTERFACE yaml-cpp)
endif()
find_package(CLI11 CONFIG REQUIRED)
find_package(spdlog REQUIRED)
find_package(Threads REQUIRED)
# PyTorch's pip LibTorch ships its own, newer {fmt} headers in its include directory, where they
# shadow the system {fmt} that the distribution's spdlog is built against: both cannot meet in one
# translation unit. With such a LibTorch, spdlog is used header-only on C++20's std::format
# (GCC >= 13), so no Tessera source includes {fmt}; elsewhere the compiled spdlog is linked.
set(TESSERA_SPDLOG_STD_FORMAT 0)
foreach(dir IN LISTS TORCH_INCLUDE_DIRS)
  list(FIND CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES "${dir}" _implicit)  # /usr/include: Debian's
  if(_implicit EQUAL -1 AND EXISTS "${dir}/fmt/format.h")
    set(TESSERA_SPDLOG_STD_FORMAT 1)
  endif()
endforeach()
add_library(tessera_spdlog INTERFACE)
if(TESSERA_SPDLOG_STD_FORMAT)
  set(CMAKE_CXX_STANDARD 20)
  get_target_property(_spdlog_include spdlog::spdlog INTERFACE_INCLUDE_DIRECTORIES)
  if(_spdlog_include)
    target_include_directories(tessera_spdlog SYSTEM INTERFACE ${_spdlog_include})
  endif()
  target_compile_definitions(tessera_spdlog INTERFACE SPDLOG_HEADER_ONLY SPDLOG_USE_STD_FORMAT)
  target_link_libraries(tessera_spdlog INTERFACE Threads::Threads)
  message(STATUS "tessera: LibTorch ships {fmt}; spdlog header-only on std::format (C++20)")
else()
  target_link_libraries(tessera_spdlog INTERFACE spdlog::spdlog)
endif()
find_package(ZLIB REQUIRED)
find_path(STB_INCLUDE_DIR stb_image_write.h PATH_SUFFIXES stb REQUIRED)

find_package(prometheus-cpp CONFIG QUIET)
if(prometheus-cpp_FOUND)
  set(TESSERA_HAVE_PROMETHEUS 1)
else()
  set(TESSERA_HAVE_PROMETHEUS 0)
  message(WARNING "tessera: prometheus-cpp not found; metrics are served by nothing "
                  "(install prometheus-cpp-dev). Looked in: ${prometheus-cpp_CONSIDERED_CONFIGS} "
                  "${prometheus-cpp_NOT_FOUND_MESSAGE}")
endif()

# HDF5's imported target name differs between CMake versions; normalise to tessera::hdf5.
add_library(tessera_hdf5 INTERFACE)
if(TARGET hdf5::hdf5)
  target_link_libraries(tessera_hdf5 INTERFACE hdf5::hdf5)
else()
  target_include_directories(tessera_hdf5 SYSTEM INTERFACE ${HDF5_INCLUDE_DIRS})
  target_link_libraries(tessera_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
  target_compile_definitions(tessera_hdf5 INTERFACE ${HDF5_DEFINITIONS})
endif()
add_library(tessera::hdf5 ALIAS tessera_hdf5)

# CUDA/NCCL: AUTO turns the backend on when the found LibTorch was built with CUDA and NCCL is
# installed; ON makes either missing an error; OFF never looks.
set(TESSERA_WITH_CUDA 0)
set(TESSERA_WITH_NCCL 0)
if(NOT TESSERA_CUDA STREQUAL "OFF")
  set(_torch_has_cuda OFF)
  if(TARGET c10_cuda OR TORCH_CUDA_LIBRARIES)
    set(_torch_has_cuda ON)
  endif()
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ENV NCCL_HOME PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY nccl HINTS ENV NCCL_HOME PATH_SUFFIXES lib lib64)
  if(_torch_has_cuda AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(TESSERA_WITH_CUDA 1)
    set(TESSERA_WITH_NCCL 1)
    find_package(CUDAToolkit REQUIRED)
    add_library(tessera_nccl INTERFACE)
    target_include_directories(tessera_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(tessera_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
  elseif(TESSERA_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TESSERA_CUDA=ON but LibTorch CUDA=${_torch_has_cuda}, "
                        "nccl.h=${NCCL_INCLUDE_DIR}, libnccl=${NCCL_LIBRARY}")
  endif()
endif()
message(STATUS "tessera: LibTorch ${Torch_VERSION}, CUDA ${TESSERA_WITH_CUDA}, "
               "NCCL ${TESSERA_WITH_NCCL}, Prometheus ${TESSERA_HAVE_PROMETHEUS}")

add_library(tessera_pch OBJECT ${PROJECT_SOURCE_DIR}/core/pch.cpp)
target_link_libraries(tessera_pch PUBLIC torch)
target_compile_options(tessera_pch PRIVATE ${TESSERA_WARNINGS})
if(TESSERA_USE_PCH)
  target_precompile_headers(tessera_pch PUBLIC <torch/torch.h>)
endif()
