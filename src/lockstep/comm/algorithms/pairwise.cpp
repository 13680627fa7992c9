// Pairwise all-to-all over a Transport.
#include "lockstep/comm/algorithms.h"

#include <cstring>

#include "lockstep/comm/algorithms/pair_util.h"

namespace lockstep::comm::algo {

// Every pair exchanges one block; all requests are posted at once and progressed together.
void alltoall_pairwise(Ctx& c, const void* in, void* out, size_t bpr) {
  const int P = c.t.size(), r = c.t.rank();
  auto* src = static_cast<const uint8_t*>(in);
  std::memmove(bytes_of(out) + size_t(r) * bpr, src + size_t(r) * bpr, bpr);
  for (int k = 1; k < P; ++k) {
    int to = mod(r + k, P), from = mod(r - k, P);
    c.t.post_recv(from, c.tag, bytes_of(out) + size_t(from) * bpr, bpr);
    c.t.post_send(to, c.tag, src + size_t(to) * bpr, bpr);
  }
  c.t.wait_all(c.deadline, c.info);
}

}  // namespace lockstep::comm::algo
