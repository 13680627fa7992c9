// ZeRO stage 1 (ddp::ZeroOptimizer) in checkpoints: each rank's shard of the optimizer state
// is saved in a file of its own, addressed by global flat offsets, and reloads at any world
// size (or, assembled, without ZeRO). The Trainer gathers with gather_zero_state on save and
// loads with restore_zero_optimizer on resume.
#pragma once

#include "lockstep/comm/process_group.h"
#include "lockstep/ddp/params.h"
#include "lockstep/ddp/zero_optimizer.h"
#include "lockstep/train/checkpoint.h"

namespace lockstep::train {

// The weights are replicated and saved once (model.safetensors) as always;
// optimizer.safetensors holds only "step"; the momentum is in one file per rank of the saving
// run, zero-shard-<r>-of-<W>.safetensors, with the tensor "momentum_buffer" of the global flat
// range [begin, end) that rank owned. The last rank's range also covers the tail every rank
// holds, so the shards tile [0, total) exactly. state.json's state.zero records the layout,
// so that another model is refused:
//   {"total": N, "params": [[name, offset, numel], ...],
//    "shards": [{"file": ..., "begin": b, "end": e}, ...]}
// A run with momentum 0 has no state to shard: its checkpoint is an ordinary one.
struct ZeroSnapshot {
  std::vector<float> values;      // rank 0: the whole flat momentum; other ranks: empty
  std::vector<TensorFile> files;  // rank 0: one shard file per rank, viewing `values`
  nlohmann::json section;         // rank 0: state.zero (null when there is no state)
};
// Collective (every rank at the same point): gathers every rank's slice on rank 0.
ZeroSnapshot gather_zero_state(comm::ProcessGroup& pg, const ddp::ZeroOptimizer& zero, ddp::ParamSource& params,
                               Millis timeout);
bool is_zero_checkpoint(const Checkpoint& c);
// Loads this rank's slice and the tail into `zero`, at any world size: from the shards that
// overlap them (only those are read), or, for a checkpoint saved without ZeRO, from the
// per-parameter "<name>.momentum_buffer" tensors. DataError naming the file and what to do
// for a missing or corrupt shard, parameters or shards that overlap or leave a gap, a wrong
// total, or a layout the model no longer has (its parameters changed since the save).
void restore_zero_optimizer(ddp::ZeroOptimizer& zero, ddp::ParamSource& params, const Checkpoint& c);
// A ZeRO checkpoint's optimizer state as a run without ZeRO saves it ("step" and every
// parameter's "<name>.momentum_buffer"), assembled from all shards.
SafetensorsData assemble_zero_state(const Checkpoint& c);

}  // namespace lockstep::train
