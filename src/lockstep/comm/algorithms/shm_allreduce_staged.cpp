// Staged all-reduce (row shm_staged), in rounds of up to slot_bytes() per rank; round k uses
// half-slot k%2, so a rank may publish round k+1 while slower peers still read round k.
//  1. publish: copy my chunk into my slot (all but my own slice, which I read in place);
//  2. reduce-scatter: after a barrier each rank folds ITS slice from every rank's slot at
//     once (cache-blocked, finished in L1), and stores it to its own buffer and its slot;
//  3. all-gather: after a second barrier each rank copies every other slice from its owner.
// With `nonfinite` (DDP's NaN/Inf guard), each rank checks the slice it reduces in the same
// pass, posts the answer with the barrier's epoch in its control line before the second
// barrier, and after it reads everyone's: no second pass over the result.
#include <algorithm>
#include <cstring>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_allreduce_staged(shm::ShmGroup& g, shm::ShmOp& o) {
  const size_t es = dtype_size(o.dt), per_round = std::max<size_t>(1, g.slot_bytes() / es);
  const size_t P = size_t(g.world()), me = size_t(g.rank()), count = o.count;
  const void** srcs = g.sources();
  // How this operation stores into the slots: measured per size class (stream_tuner.h).
  const shm::TimedTrial trial(g.tuner(), o.bytes);
  for (size_t lo = 0; lo < count; lo += per_round) {
    const size_t n = std::min(per_round, count - lo);
    const int half = g.next_half();
    auto* mine = static_cast<uint8_t*>(o.out) + lo * es;
    auto* my_slot = reinterpret_cast<uint8_t*>(g.slot(int(me), half));
    auto cut = [&](size_t r) { return n * r / P * es; };  // slice r = [cut(r), cut(r+1)) bytes
    const size_t a = cut(me), b = cut(me + 1);
    copy_to_shared(my_slot, mine, a, trial.stream());
    copy_to_shared(my_slot + b, mine + b, n * es - b, trial.stream());
    g.sync(o.info, o.dl);
    for (size_t r = 0; r < P; ++r)
      srcs[r] = r == me ? mine + a : reinterpret_cast<uint8_t*>(g.slot(int(r), half)) + a;
    bool mine_bad = false;
    reduce_many_finish(mine + a, my_slot + a, srcs, int(P), (b - a) / es, o.dt, o.op, int(P),
                       trial.stream(), o.nonfinite ? &mine_bad : nullptr);
    g.sync_nonfinite(o.nonfinite, mine_bad, o.info, o.dl);  // publishes the flag with the slice
    for (size_t r = 0; r < P; ++r)
      if (r != me)
        std::memcpy(mine + cut(r), reinterpret_cast<uint8_t*>(g.slot(int(r), half)) + cut(r),
                    cut(r + 1) - cut(r));
  }
}

}  // namespace lockstep::comm::algo
