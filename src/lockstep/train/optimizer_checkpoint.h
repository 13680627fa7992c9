// Any nn::Optimizer in and out of a checkpoint, so that the Trainer needs no case for ZeRO:
// an optimizer whose state lives whole on every rank saves state() in optimizer.safetensors;
// ddp::ZeroOptimizer saves "step" there and its sharded momentum in one file per rank
// (zero_checkpoint.h). Both calls are collective: every rank calls them at the same point.
#pragma once

#include "lockstep/comm/process_group.h"
#include "lockstep/ddp/params.h"
#include "lockstep/nn/optim.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/zero_checkpoint.h"

namespace lockstep::train {

// Views valid while the optimizer is not stepped and the snapshot lives; rank 0's are complete.
struct OptimizerSnapshot {
  std::vector<TensorView> tensors;  // optimizer.safetensors
  ZeroSnapshot shards;              // ZeRO: the shard files and state.zero (rank 0)
  void add_to(CheckpointSave& s) const;
};
OptimizerSnapshot snapshot_optimizer(comm::ProcessGroup& pg, nn::Optimizer& opt,
                                     ddp::ParamSource& params, Millis timeout);

// Loads a checkpoint's optimizer state (saved with or without ZeRO, at any world size) into
// `opt`. With ZeRO each rank reads its own shards, so every rank learns whether all could: a
// DataError on every rank alike, naming the checkpoint, when any could not.
void restore_optimizer_state(comm::ProcessGroup& pg, nn::Optimizer& opt, ddp::ParamSource& params,
                             const Checkpoint& c);

}  // namespace lockstep::train
