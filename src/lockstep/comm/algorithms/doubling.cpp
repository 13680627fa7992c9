// Recursive-doubling all-reduce over a Transport (row doubling).
#include "lockstep/comm/algorithms.h"

#include "lockstep/comm/reduce_kernels.h"

namespace lockstep::comm::algo {

// Recursive doubling: log2(P) rounds, each exchanging the whole (small) buffer with the
// partner at distance 2^k. With P not a power of two, the first 2*extra ranks pair up: the
// even one hands its data to the odd one, sits out, and receives the result at the end.
// Each pairwise combine is commutative, so partners compute bit-identical results.
void allreduce_doubling(Ctx& c, void* data, size_t count, DType dt, ReduceOp op) {
  const int P = c.t.size(), r = c.t.rank();
  const size_t bytes = count * dtype_size(dt);
  c.scratch.reserve(bytes);
  int p2 = 1;
  while (p2 * 2 <= P) p2 *= 2;
  const int extra = P - p2;
  auto exchange = [&](int peer) {
    auto rx = c.t.post_recv(peer, c.tag, c.scratch.data(), bytes);
    c.t.post_send(peer, c.tag, data, bytes);
    c.t.wait(rx, c.deadline, c.info);
    c.t.wait_all(c.deadline, c.info);
    reduce_into(data, c.scratch.data(), count, dt, op);
  };
  int vr;
  if (r < 2 * extra) {
    if (r % 2 == 0) {  // fold into the odd neighbour, then wait for the result
      c.t.post_send(r + 1, c.tag, data, bytes);
      c.t.post_recv(r + 1, c.tag, data, bytes);
      c.t.wait_all(c.deadline, c.info);
      return;
    }
    auto rx = c.t.post_recv(r - 1, c.tag, c.scratch.data(), bytes);
    c.t.wait(rx, c.deadline, c.info);
    reduce_into(data, c.scratch.data(), count, dt, op);
    vr = r / 2;
  } else {
    vr = r - extra;
  }
  for (int mask = 1; mask < p2; mask <<= 1) {
    int pv = vr ^ mask;
    exchange(pv < extra ? pv * 2 + 1 : pv + extra);
  }
  finish_avg(data, count, dt, op, P);
  if (r < 2 * extra) {  // hand the result back to the even neighbour that sat out
    c.t.post_send(r - 1, c.tag, data, bytes);
    c.t.wait_all(c.deadline, c.info);
  }
}

}  // namespace lockstep::comm::algo
