# cmake -DLAUNCHER=lockstep -DEXAMPLE=ddp_mlp -DSTEPS=n [-DMIN_ACCURACY=pct] -P RunExample.cmake
# Runs the example on two workers under `lockstep run`; fails unless it exits 0 and rank 0
# reports the summary line (with at least MIN_ACCURACY percent test accuracy when given).
foreach(v LAUNCHER EXAMPLE STEPS)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "RunExample.cmake: -D${v}=... is required")
  endif()
endforeach()
execute_process(
  COMMAND ${LAUNCHER} run --nproc-per-node 2 -- ${EXAMPLE} --steps ${STEPS}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 150)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "lockstep run ... ddp_mlp exited with '${rc}'")
endif()
set(re "ddp_mlp: 2 workers, ${STEPS} steps: final loss ([0-9.]+), test accuracy ([0-9.]+)% \\(([0-9]+) samples\\), replicas identical")
if(NOT out MATCHES "${re}")
  message(FATAL_ERROR "rank 0's summary line is missing")
endif()
set(acc ${CMAKE_MATCH_2})
if(DEFINED MIN_ACCURACY AND acc LESS MIN_ACCURACY)
  message(FATAL_ERROR "test accuracy ${acc}% is below ${MIN_ACCURACY}%")
endif()
message(STATUS "example ok: test accuracy ${acc}% on ${CMAKE_MATCH_3} samples")
