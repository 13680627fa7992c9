// Binomial trees over a Transport: broadcast from a root, reduce toward it.
#include "lockstep/comm/algorithms.h"

#include <algorithm>
#include <vector>

#include "lockstep/comm/algorithms/pair_util.h"
#include "lockstep/comm/reduce_kernels.h"

namespace lockstep::comm::algo {
namespace {

// Ranks renumbered so that the root is 0.
int real_rank(int vr, int root, int P) {
  return (vr + root) % P;
}

}  // namespace

// Binomial tree from the root, pipelined by chunks: a rank forwards chunk j to its children
// as soon as it has received it, while later chunks are still arriving.
void broadcast_tree(Ctx& c, void* data, size_t bytes, int root) {
  const int P = c.t.size(), vr = mod(c.t.rank() - root, P);
  const size_t chunk = kChunkBytes;
  const size_t C = std::max<size_t>(1, (bytes + chunk - 1) / chunk);
  auto lo = [&](size_t j) { return std::min(bytes, j * chunk); };
  auto len = [&](size_t j) { return std::min(bytes, (j + 1) * chunk) - lo(j); };
  int mask = 1, parent = -1;
  while (mask < P) {
    if (vr & mask) {
      parent = real_rank(vr - mask, root, P);
      break;
    }
    mask <<= 1;
  }
  std::vector<int> children;
  for (mask >>= 1; mask > 0; mask >>= 1)
    if (vr + mask < P) children.push_back(real_rank(vr + mask, root, P));
  std::vector<RequestId> rx(C);
  if (parent >= 0)
    for (size_t j = 0; j < C; ++j)
      rx[j] = c.t.post_recv(parent, c.tag, bytes_of(data) + lo(j), len(j));
  for (size_t j = 0; j < C; ++j) {
    if (parent >= 0) c.t.wait(rx[j], c.deadline, c.info);
    for (int ch : children) c.t.post_send(ch, c.tag, bytes_of(data) + lo(j), len(j));
  }
  c.t.wait_all(c.deadline, c.info);
}

// Binomial-tree reduce toward the root: at round k a rank with bit k set sends its partial
// result to vr - 2^k and leaves; the others fold in the partial from vr + 2^k.
void reduce_tree(Ctx& c, void* data, size_t count, DType dt, ReduceOp op, int root) {
  const int P = c.t.size(), vr = mod(c.t.rank() - root, P);
  const size_t bytes = count * dtype_size(dt);
  c.scratch.reserve(bytes);
  for (int mask = 1; mask < P; mask <<= 1) {
    if (vr & mask) {
      c.t.post_send(real_rank(vr - mask, root, P), c.tag, data, bytes);
      c.t.wait_all(c.deadline, c.info);
      return;
    }
    if ((vr | mask) < P) {
      auto rx = c.t.post_recv(real_rank(vr | mask, root, P), c.tag, c.scratch.data(), bytes);
      c.t.wait(rx, c.deadline, c.info);
      reduce_into(data, c.scratch.data(), count, dt, op);
    }
  }
  finish_avg(data, count, dt, op, P);
}

}  // namespace lockstep::comm::algo
