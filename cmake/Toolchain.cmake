# Build speed on small machines: ninja is chosen by the caller (-G Ninja); ccache and a shared
# precompiled LibTorch header are set up here.
if(TESSERA_USE_CCACHE)
  find_program(CCACHE_PROGRAM ccache)
  if(CCACHE_PROGRAM)
    # PCH needs these sloppiness settings, or ccache never hits for TUs that use it. The base
    # directory makes paths inside the checkout relative, so a clone in another folder (CI's)
    # hits the cache that a developer's build filled.
    set(CMAKE_CXX_COMPILER_LAUNCHER
        ${CMAKE_COMMAND} -E env
        "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
        "CCACHE_BASEDIR=${PROJECT_SOURCE_DIR}"
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
