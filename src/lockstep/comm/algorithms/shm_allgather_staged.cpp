// Staged all-gather (row shm_allgather): per round every rank publishes a chunk of its input;
// after a barrier each copies every peer's chunk into place.
#include <algorithm>
#include <cstring>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_allgather_staged(shm::ShmGroup& g, shm::ShmOp& o) {
  const size_t bpr = o.bytes, chunk = g.slot_bytes();
  const auto* in = static_cast<const uint8_t*>(o.in);
  auto* out = static_cast<uint8_t*>(o.out);
  for (size_t lo = 0; lo < bpr; lo += chunk) {
    const size_t n = std::min(chunk, bpr - lo);
    const int half = g.next_half();
    copy_to_shared(g.slot(g.rank(), half), in + lo, n, g.tuner().preferred(bpr));
    g.sync(o.info, o.dl);
    for (int r = 0; r < g.world(); ++r) {
      const void* src = r == g.rank() ? static_cast<const void*>(in + lo) : g.slot(r, half);
      std::memcpy(out + size_t(r) * bpr + lo, src, n);
    }
  }
}

}  // namespace lockstep::comm::algo
