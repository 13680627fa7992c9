# cmake -DLAUNCHER=lockstep -DEXAMPLE=libtorch_cnn -P RunLibtorchCnn.cmake
# examples/libtorch_cnn on two workers under `lockstep run`, 30 steps: fails unless it exits 0
# and rank 0's summary line holds samples/s, test_acc well above chance (0.1 for 10 classes)
# and "replicas identical".
execute_process(
  COMMAND ${LAUNCHER} run --nproc-per-node 2 -- ${EXAMPLE} --steps 30
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 150)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "lockstep run ... libtorch_cnn exited with '${rc}'")
endif()
if(NOT out MATCHES "libtorch_cnn: 2 workers, 30 steps, samples/s=[0-9]+, test_acc=(0\\.[0-9]+) \\(10000 samples\\), grads=cpu, replicas identical")
  message(FATAL_ERROR "rank 0's summary line is missing")
endif()
if(CMAKE_MATCH_1 LESS 0.4)
  message(FATAL_ERROR "test_acc ${CMAKE_MATCH_1} after 30 steps: the model did not learn (chance is 0.1)")
endif()
