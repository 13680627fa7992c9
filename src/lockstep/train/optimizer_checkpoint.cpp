#include "lockstep/train/optimizer_checkpoint.h"

#include "lockstep/core/error.h"
#include "lockstep/ddp/zero_optimizer.h"
#include "lockstep/train/train_state.h"

namespace lockstep::train {

namespace {

// The one place that tells a sharded optimizer from the others: its state is saved per rank.
ddp::ZeroOptimizer* sharded(nn::Optimizer& opt) {
  return dynamic_cast<ddp::ZeroOptimizer*>(&opt);
}

// Each rank loads its own slice; all learn whether every rank could, so that a bad shard read
// by one rank stops all of them at once.
void restore_sharded(comm::ProcessGroup& pg, ddp::ZeroOptimizer& zero, ddp::ParamSource& params,
                     const Checkpoint& c) {
  double failed[1] = {0};
  std::exception_ptr error;
  try {
    restore_zero_optimizer(zero, params, c);
    restore_optimizer(zero, c.optimizer, (c.path / "optimizer.safetensors").string());  // "step"
  } catch (const std::exception&) {
    failed[0] = 1;
    error = std::current_exception();
  }
  if (pg.size() > 1) pg.allreduce(std::span<double>(failed), comm::ReduceOp::sum).wait();
  if (error) std::rethrow_exception(error);
  if (failed[0] != 0)
    LOCKSTEP_THROW(
        DataError, c.path.string(), ": ", int64_t(failed[0]),
        " rank(s) could not load their ZeRO "
        "optimizer state (see their error); nothing was changed. Resume from an older checkpoint");
}

}  // namespace

void OptimizerSnapshot::add_to(CheckpointSave& s) const {
  s.optimizer = tensors;
  s.extra_files = shards.files;
  if (!shards.section.is_null()) s.state["zero"] = shards.section;
}

OptimizerSnapshot snapshot_optimizer(comm::ProcessGroup& pg, nn::Optimizer& opt,
                                     ddp::ParamSource& params, Millis timeout) {
  OptimizerSnapshot snap;
  snap.tensors = optimizer_views(opt);
  if (ddp::ZeroOptimizer* zero = sharded(opt))
    snap.shards = gather_zero_state(pg, *zero, params, timeout);
  return snap;
}

void restore_optimizer_state(comm::ProcessGroup& pg, nn::Optimizer& opt, ddp::ParamSource& params,
                             const Checkpoint& c) {
  if (ddp::ZeroOptimizer* zero = sharded(opt)) return restore_sharded(pg, *zero, params, c);
  // A ZeRO checkpoint's state is assembled from its shards.
  restore_optimizer(opt, is_zero_checkpoint(c) ? assemble_zero_state(c) : c.optimizer,
                    (c.path / "optimizer.safetensors").string());
}

}  // namespace lockstep::train
