# cmake -DMODE=ldd -DPROGRAMS="a;b" -P CheckPlugins.cmake
# cmake -DMODE=version -DLOCKSTEP=<lockstep> -DBUILT="mpi;gloo" -DWORK_DIR=<dir> -P CheckPlugins.cmake
#
# ldd: none of PROGRAMS links an engine's library (libcudart, libnccl, libmpi, libgloo): the
#      backends on them are plugins, loaded only when asked for (issue 21).
# version: `lockstep --version` lists "native" and every backend BUILT, each loaded from its
#      plugin; with LOCKSTEP_BACKEND_PATH at an empty folder it lists "native" alone, and says
#      for each backend built what to install and what the loader said.
if(MODE STREQUAL "ldd")
  foreach(p ${PROGRAMS})
    execute_process(COMMAND ldd ${p} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 30)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "ldd ${p} failed (${rc}): ${err}")
    endif()
    string(REGEX MATCHALL "lib(cudart|nccl|mpi|gloo)[^ \t\n]*" engines "${out}")
    list(REMOVE_DUPLICATES engines)
    if(engines)
      message(FATAL_ERROR "${p} links ${engines}: a program that uses no mpi/gloo/nccl backend must not "
                          "(the backends are plugins in <libdir>/lockstep); ldd says:\n${out}")
    endif()
    message(STATUS "${p}: no engine libraries")
  endforeach()
elseif(MODE STREQUAL "version")
  execute_process(COMMAND ${LOCKSTEP} --version RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out TIMEOUT 60)
  set(want "backends: native")
  foreach(b ${BUILT})
    string(APPEND want " ${b}")
  endforeach()
  if(NOT rc EQUAL 0 OR NOT out MATCHES "${want}\n")
    message(FATAL_ERROR "lockstep --version should list '${want}' (rc ${rc}):\n${out}")
  endif()
  file(REMOVE_RECURSE ${WORK_DIR})
  file(MAKE_DIRECTORY ${WORK_DIR})
  execute_process(COMMAND ${CMAKE_COMMAND} -E env LOCKSTEP_BACKEND_PATH=${WORK_DIR} ${LOCKSTEP} --version
                  RESULT_VARIABLE rc OUTPUT_VARIABLE none ERROR_VARIABLE none TIMEOUT 60)
  file(REMOVE_RECURSE ${WORK_DIR})
  if(NOT rc EQUAL 0 OR NOT none MATCHES "backends: native\n")
    message(FATAL_ERROR "with no plugins, lockstep --version should list 'backends: native' alone (rc ${rc}):\n${none}")
  endif()
  set(package_mpi "libopenmpi-dev")
  set(package_gloo "libgloo-dev")
  set(package_nccl "NCCL")
  foreach(b ${BUILT})
    if(NOT none MATCHES "backend '${b}' cannot be loaded" OR NOT none MATCHES "${package_${b}}"
       OR NOT none MATCHES "liblockstep_backend_${b}.so: cannot open shared object file")
      message(FATAL_ERROR "with no plugins, lockstep --version should say why ${b} cannot load and "
                          "what to install (${package_${b}}):\n${none}")
    endif()
  endforeach()
  message(STATUS "lockstep --version:\n${out}\nwithout plugins:\n${none}")
else()
  message(FATAL_ERROR "CheckPlugins.cmake: -DMODE=ldd|version")
endif()
