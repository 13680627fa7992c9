#include "lockstep/ddp/join.h"

#include <algorithm>
#include <vector>

#include "lockstep/core/error.h"
#include "lockstep/ddp/replica_check.h"

namespace lockstep::ddp {

Join::Join(DistributedDataParallel& ddp, JoinOptions opt) : ddp_(ddp), opt_(opt) {}

int Join::count_active(int me) {
  int32_t flag = me;
  ddp_.process_group().allreduce(&flag, 1, DType::i32, comm::ReduceOp::sum).wait(ddp_.options().timeout);
  return flag;
}

int Join::begin_step() {
  if (finished_) LOCKSTEP_THROW(InvalidArgument, "Join::begin_step after finish() on rank ", ddp_.process_group().rank());
  const int world = ddp_.process_group().size();
  const int active = world == 1 ? 1 : count_active(1);
  // Same count on every rank, so every rank agrees on checks and scaling for this step.
  ddp_.set_replica_checks(active == world);
  ddp_.set_join_scale(opt_.divide_by_initial_world_size ? 1.0f : float(world) / float(active));
  return active;
}

int64_t Join::finish() {
  if (finished_) return 0;
  finished_ = true;
  comm::ProcessGroup& pg = ddp_.process_group();
  if (pg.size() == 1) return 0;
  int64_t shadowed = 0;
  while (count_active(0) > 0) {
    ddp_.shadow_step();
    ++shadowed;
  }
  // The ranks that ran the most steps hold the current model; copy the lowest such rank's.
  int64_t mine = ddp_.steps();
  std::vector<int64_t> steps(size_t(pg.size()));
  pg.allgather(&mine, steps.data(), 1, DType::i64).wait(ddp_.options().timeout);
  const int src = int(std::max_element(steps.begin(), steps.end()) - steps.begin());
  broadcast_state(pg, ddp_.params(), true, true, src, ddp_.options().timeout);
  ddp_.set_join_scale(1.0f);
  ddp_.set_replica_checks(true);
  return shadowed;
}

}  // namespace lockstep::ddp
