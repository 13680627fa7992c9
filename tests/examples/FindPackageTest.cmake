# cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=... -DCXX=... -DGENERATOR=...
#       [-DSHARED=ON -DBUILT="mpi;gloo;nccl" -DBENCH=ON -DTORCH=ON] -P FindPackageTest.cmake
# lockstep as an installed package: `cmake --install` the build tree into a temporary prefix
# (not the python component, which goes to the system's Python), then against it:
# - examples/ddp_mlp built alone (find_package(lockstep)) and run with the installed
#   `lockstep run`; in a shared build it links no engine library (ldd);
# - tests/examples/consumer built with find_package + lockstep::lockstep, and again with
#   pkg-config (lockstep.pc); both run an all-reduce on every backend that loads;
# - the installed `lockstep --version` loads the plugins from <prefix>/lib/lockstep, and the
#   installed `lockstep bench collectives` runs one 8-byte size (BENCH);
# - examples/libtorch_cnn built alone (find_package(lockstep), lockstep::torch) and run for 10
#   steps with the installed `lockstep run` (TORCH: lockstep was built with LibTorch).
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
    include/lockstep/comm/backends/config.h bin/lockstep lib/pkgconfig/lockstep.pc)
if(SHARED)
  foreach(b ${BUILT})
    list(APPEND expected lib/lockstep/liblockstep_backend_${b}.so)
  endforeach()
endif()
if(BENCH)
  list(APPEND expected libexec/lockstep/bench_collectives)
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

# A consumer through find_package(lockstep) and lockstep::lockstep, then through pkg-config.
function(check_consumer how exe)
  step("run the ${how} consumer" ${exe})
  foreach(b native ${BUILT})
    if(NOT b STREQUAL "nccl" AND NOT b STREQUAL "mpi" AND NOT step_output MATCHES "consumer: ${b} all-reduce 1.5 2.5")
      file(REMOVE_RECURSE ${WORK_DIR})
      message(FATAL_ERROR "the ${how} consumer did not all-reduce on ${b}:\n${step_output}")
    endif()
  endforeach()
endfunction()
set(cbuild ${WORK_DIR}/consumer)
step("configure the consumer (find_package, lockstep::lockstep)"
     ${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/consumer -B ${cbuild} -G ${GENERATOR}
     -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${prefix})
step("build the consumer" ${CMAKE_COMMAND} --build ${cbuild})
check_consumer("find_package" ${cbuild}/consumer)

find_program(PKG_CONFIG pkg-config)
if(PKG_CONFIG)
  step("pkg-config lockstep" ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${prefix}/lib/pkgconfig
       ${PKG_CONFIG} --cflags --libs lockstep)
  separate_arguments(flags UNIX_COMMAND "${step_output}")
  set(extra)
  if(NOT SHARED)
    step("pkg-config --static lockstep" ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${prefix}/lib/pkgconfig
         ${PKG_CONFIG} --static --cflags --libs lockstep)
    separate_arguments(flags UNIX_COMMAND "${step_output}")
  endif()
  step("build the consumer with pkg-config" ${CXX} -std=c++20 ${CMAKE_CURRENT_LIST_DIR}/consumer/main.cpp
       ${flags} -Wl,-rpath,${prefix}/lib -o ${WORK_DIR}/consumer_pc)
  check_consumer("pkg-config" ${WORK_DIR}/consumer_pc)
else()
  message(STATUS "pkg-config not found: the pkg-config consumer is not built")
endif()

# The installed `lockstep bench collectives` finds its program in <prefix>/libexec/lockstep.
if(BENCH)
  step("installed lockstep bench collectives" ${prefix}/bin/lockstep bench collectives --nproc 2
       --min-bytes 8 --max-bytes 8 --iters 2 --warmup 1 --reps 1 --warmup-ms 0 --batch-ms 0)
  if(NOT step_output MATCHES "\n +8 +2 ")
    file(REMOVE_RECURSE ${WORK_DIR})
    message(FATAL_ERROR "the installed lockstep bench collectives printed no 8-byte row:\n${step_output}")
  endif()
endif()

# With LibTorch (TORCH): examples/libtorch_cnn built alone against the installed lockstep
# (find_package(lockstep) brings Torch and lockstep::torch) and run by the installed launcher.
if(TORCH)
  set(tbuild ${WORK_DIR}/libtorch_cnn)
  step("configure examples/libtorch_cnn against the installed lockstep"
       ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/libtorch_cnn -B ${tbuild} -G ${GENERATOR}
       -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${prefix})
  step("build examples/libtorch_cnn" ${CMAKE_COMMAND} --build ${tbuild})
  step("ldd examples/libtorch_cnn" ldd ${tbuild}/libtorch_cnn)
  if(NOT step_output MATCHES "liblockstep_torch[^\n]*=> ${prefix}/lib/" AND SHARED)
    file(REMOVE_RECURSE ${WORK_DIR})
    message(FATAL_ERROR "libtorch_cnn does not load lockstep::torch from ${prefix}/lib:\n${step_output}")
  endif()
  step("run examples/libtorch_cnn" ${prefix}/bin/lockstep run --nproc-per-node 2 --
       ${tbuild}/libtorch_cnn --epochs 1 --steps 10)
  if(NOT step_output MATCHES "libtorch_cnn: 2 workers, 10 steps, samples/s=[0-9]+, test_acc=[0-9.]+ [^\n]*replicas identical")
    file(REMOVE_RECURSE ${WORK_DIR})
    message(FATAL_ERROR "the installed libtorch_cnn printed no summary line:\n${step_output}")
  endif()
endif()
file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "installed lockstep: examples/ddp_mlp and the consumer (find_package, pkg-config) built and ran")
