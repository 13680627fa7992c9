// All-gather of inputs inside shared blocks (row shm_allgather_shared): after a barrier
// (every block holds its rank's input) each rank copies every peer's input straight into
// place; the second barrier keeps each input unchanged until every peer has read it.
#include <cstring>

#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_allgather_shared(shm::ShmGroup& g, shm::ShmOp& o) {
  const size_t bpr = o.bytes;
  auto* out = static_cast<uint8_t*>(o.out);
  g.sync_shared(o.info, o.dl);
  for (int r = 0; r < g.world(); ++r) {
    const void* src = r == g.rank() ? o.in : g.shared_buf(r);
    if (out + size_t(r) * bpr != src) std::memcpy(out + size_t(r) * bpr, src, bpr);
  }
  g.sync(o.info, o.dl);
}

}  // namespace lockstep::comm::algo
