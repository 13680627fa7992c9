// Linear gather and scatter over a Transport: the root posts one message per rank.
#include "lockstep/comm/algorithms.h"

#include <cstring>

#include "lockstep/comm/algorithms/pair_util.h"

namespace lockstep::comm::algo {

void gather_linear(Ctx& c, const void* in, void* out, size_t bpr, int root) {
  const int P = c.t.size(), r = c.t.rank();
  if (r != root) {
    c.t.post_send(root, c.tag, in, bpr);
  } else {
    std::memmove(bytes_of(out) + size_t(r) * bpr, in, bpr);
    for (int p = 0; p < P; ++p)
      if (p != r) c.t.post_recv(p, c.tag, bytes_of(out) + size_t(p) * bpr, bpr);
  }
  c.t.wait_all(c.deadline, c.info);
}

void scatter_linear(Ctx& c, const void* in, void* out, size_t bpr, int root) {
  const int P = c.t.size(), r = c.t.rank();
  if (r != root) {
    c.t.post_recv(root, c.tag, out, bpr);
  } else {
    for (int p = 0; p < P; ++p)
      if (p != r) c.t.post_send(p, c.tag, static_cast<const uint8_t*>(in) + size_t(p) * bpr, bpr);
    std::memmove(out, static_cast<const uint8_t*>(in) + size_t(r) * bpr, bpr);
  }
  c.t.wait_all(c.deadline, c.info);
}

}  // namespace lockstep::comm::algo
