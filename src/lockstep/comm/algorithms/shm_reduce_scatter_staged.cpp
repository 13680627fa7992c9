// Staged reduce-scatter (row shm_reduce_scatter): per round every rank publishes, for each
// peer j, the chunk of its input that j owns; after a barrier each rank folds its own piece
// from all slots at once (rank order, the same everywhere).
#include <algorithm>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_reduce_scatter_staged(shm::ShmGroup& g, shm::ShmOp& o) {
  const size_t es = dtype_size(o.dt), P = size_t(g.world()), me = size_t(g.rank()), count = o.count;
  const auto* in = static_cast<const uint8_t*>(o.in);
  auto* out = static_cast<uint8_t*>(o.out);
  const void** srcs = g.sources();
  const size_t per_round = std::max<size_t>(1, g.slot_bytes() / (P * es));
  for (size_t lo = 0; lo < count; lo += per_round) {
    const size_t n = std::min(per_round, count - lo);
    const int half = g.next_half();
    auto* my_slot = reinterpret_cast<uint8_t*>(g.slot(int(me), half));
    for (size_t j = 0; j < P; ++j)
      if (j != me)
        copy_to_shared(my_slot + j * n * es, in + (j * count + lo) * es, n * es,
                       g.tuner().preferred(count * es));
    g.sync(o.info, o.dl);
    for (size_t r = 0; r < P; ++r)
      srcs[r] = r == me ? in + (me * count + lo) * es
                        : reinterpret_cast<uint8_t*>(g.slot(int(r), half)) + me * n * es;
    reduce_many_finish(out + lo * es, nullptr, srcs, int(P), n, o.dt, o.op, int(P));
  }
}

}  // namespace lockstep::comm::algo
