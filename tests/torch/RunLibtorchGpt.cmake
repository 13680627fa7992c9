# cmake -DLAUNCHER=lockstep -DEXAMPLE=libtorch_gpt -P RunLibtorchGpt.cmake
# examples/libtorch_gpt on two workers under `lockstep run`, 8 steps of lockstep's default
# char-gpt size (dim 128, 2 layers: seconds, not minutes, on a loaded 2-core machine): fails
# unless it exits 0 and rank 0's summary line holds samples/s, a held-out loss below that of
# a uniform guess over the file's 76 characters, and "replicas identical".
execute_process(
  COMMAND ${LAUNCHER} run --nproc-per-node 2 -- ${EXAMPLE} --steps 8 --dim 128 --layers 2
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 150)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "lockstep run ... libtorch_gpt exited with '${rc}'")
endif()
if(NOT out MATCHES "libtorch_gpt: 2 workers, 8 steps, [0-9]+ parameters, samples/s=[0-9.]+, val_loss=([0-9]+\\.[0-9]+) \\(54 windows of 64\\), replicas identical")
  message(FATAL_ERROR "rank 0's summary line is missing")
endif()
# ln(76) = 4.33: a model that predicts every one of the text's 76 characters alike. The
# untrained model is worse than that (its head's random logits: 4.95 with --lr 0), so the
# bound fails unless the averaged gradients taught it something.
if(CMAKE_MATCH_1 GREATER_EQUAL 4.33)
  message(FATAL_ERROR "val_loss ${CMAKE_MATCH_1} after 8 steps: the model did not learn (uniform is 4.33)")
endif()
