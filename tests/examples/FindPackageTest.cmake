# cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=... -DCXX=... -DGENERATOR=... -P FindPackageTest.cmake
# lockstep as an installed CMake package: `cmake --install` the build tree into a temporary
# prefix, configure and build examples/ddp_mlp alone against it (find_package(lockstep)),
# and run the result with the installed `lockstep run`. WORK_DIR is removed before and after.
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
step("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f lib/cmake/lockstep/lockstepConfig.cmake include/lockstep/ddp/ddp.h include/lockstep/config.h
          include/lockstep/comm/backends/config.h bin/lockstep)
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
file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "find_package(lockstep): installed, built and ran examples/ddp_mlp")
