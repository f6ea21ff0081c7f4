# Build speed on small machines: ninja is chosen by the caller (-G Ninja); ccache and a shared
# precompiled LibTorch header are set up here.
if(TESSERA_USE_CCACHE)
  find_program(CCACHE_PROGRAM ccache)
  if(CCACHE_PROGRAM)
    # PCH needs these sloppiness settings, or ccache never hits for TUs that use it.
    set(CMAKE_CXX_COMPILER_LAUNCHER
        ${CMAKE_COMMAND} -E env
        "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
        ${CCACHE_PROGRAM})
    message(STATUS "tessera: using ccache (${CCACHE_PROGRAM})")
  endif()
endif()

set(TESSERA_WARNINGS -Wall -Wextra -Wundef -Wno-unused-parameter)

# One PCH object library; every Tessera target reuses it (same flags everywhere). Sources given
# after the target skip it.
function(tessera_use_pch target)
  if(TESSERA_USE_PCH)
    target_precompile_headers(${target} REUSE_FROM tessera_pch)
    if(ARGN)
      set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target}
                                  PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
    endif()
  endif()
endfunction()

# PyTorch's pip LibTorch exports copies of libstdc++'s std::filesystem internals that it linked
# statically (pytorch/pytorch#133437). Whichever library comes first in the dynamic linker's
# search order wins, and the libraries come before libstdc++ on the link line: the GPU build's
# std::filesystem::remove_all of a non-empty directory then ran torch's copy and crashed. Naming
# libstdc++ first makes it the first DT_NEEDED entry, so its own symbols are found first; with
# Debian's LibTorch it changes nothing.
if(CMAKE_SYSTEM_NAME STREQUAL "Linux" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  add_link_options("SHELL:-Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state")
endif()
