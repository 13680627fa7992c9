// Staged broadcast (row shm_broadcast): per round the root publishes a chunk in its slot;
// after one barrier everyone copies it out (the next round's barrier proves the reads of
// this half are done).
#include <algorithm>
#include <cstring>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_broadcast_staged(shm::ShmGroup& g, shm::ShmOp& o) {
  const size_t bytes = o.bytes, chunk = g.slot_bytes();
  auto* data = static_cast<uint8_t*>(o.out);
  for (size_t lo = 0; lo < bytes; lo += chunk) {
    const size_t n = std::min(chunk, bytes - lo);
    const int half = g.next_half();
    if (g.rank() == o.root)
      copy_to_shared(g.slot(o.root, half), data + lo, n, g.tuner().preferred(bytes));
    g.sync(o.info, o.dl);
    if (g.rank() != o.root) std::memcpy(data + lo, g.slot(o.root, half), n);
  }
}

}  // namespace lockstep::comm::algo
