# cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=... -DCXX=... -DGENERATOR=...
#       [-DSHARED=ON -DBUILT="mpi;gloo;nccl"] -P FindPackageTest.cmake
# lockstep as an installed package: `cmake --install` the build tree into a temporary prefix
# (not the python component, which goes to the system's Python), then against it:
# - examples/ddp_mlp built alone (find_package(lockstep)) and run with the installed
#   `lockstep run`; in a shared build it links no engine library (ldd);
# - the installed `lockstep --version` loads the plugins from <prefix>/lib/lockstep.
# WORK_DIR is removed before and after.
foreach(v BUILD_DIR SOURCE_DIR WORK_DIR CXX GENERATOR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "FindPackageTest.cmake: -D${v}=... is required")
  endif()
endforeach()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()
set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out
                  TIMEOUT 500)
  if(NOT rc EQUAL 0)
    file(REMOVE_RECURSE ${WORK_DIR})
    message(FATAL_ERROR "${what} failed ('${rc}'):\n${out}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
step("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} --component Unspecified)
set(expected lib/cmake/lockstep/lockstepConfig.cmake include/lockstep/ddp/ddp.h include/lockstep/config.h
    include/lockstep/comm/backends/config.h bin/lockstep)
if(SHARED)
  foreach(b ${BUILT})
    list(APPEND expected lib/lockstep/liblockstep_backend_${b}.so)
  endforeach()
endif()
foreach(f ${expected})
  if(NOT EXISTS ${prefix}/${f})
    file(REMOVE_RECURSE ${WORK_DIR})
    message(FATAL_ERROR "the install lacks ${f}")
  endif()
endforeach()
step("configure examples/ddp_mlp against the installed lockstep"
     ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/ddp_mlp -B ${build} -G ${GENERATOR}
     -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${prefix})
file(STRINGS ${build}/CMakeCache.txt found REGEX "^lockstep_DIR:")
if(NOT found MATCHES "${prefix}/")
  file(REMOVE_RECURSE ${WORK_DIR})
  message(FATAL_ERROR "find_package(lockstep) found another lockstep: ${found}")
endif()
step("build examples/ddp_mlp" ${CMAKE_COMMAND} --build ${build})
step("run the example" ${CMAKE_COMMAND} -DLAUNCHER=${prefix}/bin/lockstep -DEXAMPLE=${build}/ddp_mlp
     -DSTEPS=20 -P ${CMAKE_CURRENT_LIST_DIR}/RunExample.cmake)
message("${step_output}")
if(SHARED)
  step("ldd the example" ldd ${build}/ddp_mlp)
  if(step_output MATCHES "lib(cudart|nccl|mpi|gloo)")
    file(REMOVE_RECURSE ${WORK_DIR})
    message(FATAL_ERROR "ddp_mlp built against the installed lockstep links an engine:\n${step_output}")
  endif()
endif()

# The installed `lockstep --version`: every backend built, loaded from the installed plugins.
step("installed lockstep --version" ${prefix}/bin/lockstep --version)
set(want "backends: native")
foreach(b ${BUILT})
  string(APPEND want " ${b}")
endforeach()
if(NOT step_output MATCHES "${want}\n" OR (SHARED AND NOT step_output MATCHES "plugins from: ${prefix}/lib/lockstep"))
  file(REMOVE_RECURSE ${WORK_DIR})
  message(FATAL_ERROR "the installed lockstep --version should list '${want}' from ${prefix}/lib/lockstep:\n${step_output}")
endif()

file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "installed lockstep: examples/ddp_mlp built and ran, plugins loaded")
