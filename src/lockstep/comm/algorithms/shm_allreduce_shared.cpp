// All-reduce of a buffer inside blocks the ranks allocated together (row shm_shared: every
// rank's buffer in its own block of the same allocation, at any offset): no staging. After a
// barrier (every block holds its rank's input) each rank folds its slice from every block at
// once, stores the result in its own block and in every peer's (with two ranks in the same
// pass), and a second barrier says every slice has arrived everywhere. Nobody else touches
// slice s of any block: rank s reads it, then overwrites it, so the stores race with no
// reader. After the second barrier no rank touches another's block, so each may reuse its
// buffer at once.
#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_allreduce_shared(shm::ShmGroup& g, shm::ShmOp& o) {
  const size_t es = dtype_size(o.dt), P = size_t(g.world()), me = size_t(g.rank()), count = o.count;
  auto block = [&](size_t r) { return reinterpret_cast<uint8_t*>(g.shared_buf(int(r))); };
  auto cut = [&](size_t r) { return count * r / P * es; };
  const size_t a = cut(me), b = cut(me + 1);
  const shm::TimedTrial trial(g.shared_tuner(), o.bytes);
  g.sync_shared(o.info, o.dl);
  const void** srcs = g.sources();
  for (size_t r = 0; r < P; ++r) srcs[r] = block(r) + a;
  bool mine_bad = false;
  void* also = P == 2 ? block(1 - me) + a : nullptr;
  reduce_many_finish(block(me) + a, also, srcs, int(P), (b - a) / es, o.dt, o.op, int(P),
                     trial.stream(), o.nonfinite ? &mine_bad : nullptr);
  if (P > 2)
    for (size_t r = 0; r < P; ++r)
      if (r != me) copy_to_shared(block(r) + a, block(me) + a, b - a, trial.stream());
  g.sync_nonfinite(o.nonfinite, mine_bad, o.info, o.dl);
}

}  // namespace lockstep::comm::algo
