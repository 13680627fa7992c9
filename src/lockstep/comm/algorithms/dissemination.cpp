// Dissemination barrier over a Transport.
#include "lockstep/comm/algorithms.h"

#include "lockstep/comm/algorithms/pair_util.h"

namespace lockstep::comm::algo {

// Dissemination barrier: in round k every rank signals rank r+2^k and waits for r-2^k;
// after ceil(log2 P) rounds everyone has (transitively) heard from everyone.
void barrier_dissemination(Ctx& c) {
  const int P = c.t.size(), r = c.t.rank();
  for (int k = 1; k < P; k <<= 1) {
    c.t.post_recv(mod(r - k, P), c.tag, nullptr, 0);
    c.t.post_send(mod(r + k, P), c.tag, nullptr, 0);
    c.t.wait_all(c.deadline, c.info);
  }
}

}  // namespace lockstep::comm::algo
