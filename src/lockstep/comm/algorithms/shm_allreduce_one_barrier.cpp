// One-barrier all-reduce (row shm_one_barrier): every rank publishes its whole buffer in its
// staging slot; after one barrier each folds every slot in rank order (the same order
// everywhere, so every rank ends with the same bits). Double buffering makes one barrier per
// operation enough: a rank overwrites half h for operation k+2 only after operation k+1's
// barrier, which every rank reaches only after it finished reading operation k's half h.
#include <cstring>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_allreduce_one_barrier(shm::ShmGroup& g, shm::ShmOp& o) {
  const int half = g.next_half(), me = g.rank(), P = g.world();
  std::memcpy(g.slot(me, half), o.in, o.bytes);
  g.sync(o.info, o.dl);
  const void** srcs = g.sources();
  for (int r = 0; r < P; ++r) srcs[r] = r == me ? o.in : g.slot(r, half);
  reduce_many_finish(o.out, nullptr, srcs, P, o.count, o.dt, o.op, P, true, o.nonfinite);
}

}  // namespace lockstep::comm::algo
