#include "lockstep/comm/algorithms.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/core/error.h"

namespace lockstep::comm::algo {
namespace {

// Pipelining unit of the ring: small enough that send, receive and reduce of neighbouring
// chunks overlap, large enough that per-message costs vanish.
constexpr size_t kChunkBytes = 256 << 10;
constexpr size_t kDoublingMaxBytes = 64 << 10;

int mod(int a, int p) { return ((a % p) + p) % p; }

// The buffer cut in P segments of near-equal whole elements; offsets in bytes.
struct Segments {
  size_t count, esize;
  int parts;
  size_t off(int i) const { return count * size_t(i) / size_t(parts) * esize; }
  size_t len(int i) const { return off(i + 1) - off(i); }
  size_t max_len() const { return (count + size_t(parts) - 1) / size_t(parts) * esize; }
  // Chunk j of a segment: [j*chunk, min(len, (j+1)*chunk)) — possibly empty.
  size_t chunk_bytes() const {
    return std::max<size_t>(esize, kChunkBytes / esize * esize);
  }
  size_t nchunks() const { return std::max<size_t>(1, (max_len() + chunk_bytes() - 1) / chunk_bytes()); }
  size_t chunk_lo(int seg, size_t j) const { return std::min(len(seg), j * chunk_bytes()); }
  size_t chunk_len(int seg, size_t j) const {
    return std::min(len(seg), (j + 1) * chunk_bytes()) - chunk_lo(seg, j);
  }
};

uint8_t* bytes_of(void* p) { return static_cast<uint8_t*>(p); }

// Reduce-scatter phase of the ring. At step s rank r sends segment (r+shift-s) to its right
// neighbour and receives segment (r+shift-s-1) from its left, folding it into its own copy;
// the folded chunk is forwarded at step s+1 as soon as it is ready, so sending, receiving and
// reducing overlap. After P-1 steps rank r holds the full reduction of segment (r+shift+1).
void ring_rs_phase(Ctx& c, uint8_t* data, const Segments& sg, DType dt, ReduceOp op, int shift,
                   uint8_t* tmp) {
  const int P = c.t.size(), r = c.t.rank();
  const int left = mod(r - 1, P), right = mod(r + 1, P);
  const size_t C = sg.nchunks();
  auto seg_sent_at = [&](int step) { return mod(r + shift - step, P); };
  std::vector<RequestId> rx(C);
  int s0 = seg_sent_at(0), s1 = seg_sent_at(1);
  for (size_t j = 0; j < C; ++j)
    c.t.post_send(right, c.tag, data + sg.off(s0) + sg.chunk_lo(s0, j), sg.chunk_len(s0, j));
  for (size_t j = 0; j < C; ++j)
    rx[j] = c.t.post_recv(left, c.tag, tmp + sg.chunk_lo(s1, j), sg.chunk_len(s1, j));
  for (int step = 0; step + 1 < P; ++step) {
    const int rs = seg_sent_at(step + 1), next = seg_sent_at(step + 2);
    for (size_t j = 0; j < C; ++j) {
      c.t.wait(rx[j], c.deadline, c.info);
      uint8_t* mine = data + sg.off(rs) + sg.chunk_lo(rs, j);
      size_t n = sg.chunk_len(rs, j);
      reduce_into(mine, tmp + sg.chunk_lo(rs, j), n / sg.esize, dt, op);
      if (step + 2 < P) {  // forward the folded chunk; reuse its scratch slot for the next one
        c.t.post_send(right, c.tag, mine, n);
        rx[j] = c.t.post_recv(left, c.tag, tmp + sg.chunk_lo(next, j), sg.chunk_len(next, j));
      }
    }
  }
  c.t.wait_all(c.deadline, c.info);
}

// All-gather phase of the ring: rank r starts with segment `have` complete. At step s it sends
// segment (have-s) right and receives segment (have-s-1) from the left straight into place;
// each received chunk is forwarded at the next step. Receives are all posted up front.
void ring_ag_phase(Ctx& c, uint8_t* data, const Segments& sg, int have) {
  const int P = c.t.size(), r = c.t.rank();
  const int left = mod(r - 1, P), right = mod(r + 1, P);
  const size_t C = sg.nchunks();
  std::vector<RequestId> rx(size_t(P - 1) * C);
  for (int s = 0; s + 1 < P; ++s) {
    int seg = mod(have - s - 1, P);
    for (size_t j = 0; j < C; ++j)
      rx[size_t(s) * C + j] = c.t.post_recv(left, c.tag, data + sg.off(seg) + sg.chunk_lo(seg, j),
                                            sg.chunk_len(seg, j));
  }
  for (size_t j = 0; j < C; ++j)
    c.t.post_send(right, c.tag, data + sg.off(have) + sg.chunk_lo(have, j), sg.chunk_len(have, j));
  for (int s = 0; s + 2 < P; ++s) {
    int seg = mod(have - s - 1, P);
    for (size_t j = 0; j < C; ++j) {
      c.t.wait(rx[size_t(s) * C + j], c.deadline, c.info);
      c.t.post_send(right, c.tag, data + sg.off(seg) + sg.chunk_lo(seg, j), sg.chunk_len(seg, j));
    }
  }
  c.t.wait_all(c.deadline, c.info);
}

// Binomial-tree helpers: ranks renumbered so that the root is 0.
int real_rank(int vr, int root, int P) { return (vr + root) % P; }

}  // namespace

AllreduceAlgo choose_allreduce(size_t bytes, int world, const std::string& forced) {
  if (forced == "ring") return AllreduceAlgo::ring;
  if (forced == "doubling") return AllreduceAlgo::doubling;
  return bytes <= kDoublingMaxBytes || (world == 2 && bytes <= 2 * kDoublingMaxBytes)
             ? AllreduceAlgo::doubling
             : AllreduceAlgo::ring;
}

// Ring all-reduce = reduce-scatter + all-gather: every rank sends and receives 2(P-1)/P of
// the buffer, the bandwidth optimum. avg is divided once, on the owned segment, before the
// all-gather, so every rank ends with bit-identical values.
void allreduce_ring(Ctx& c, void* data, size_t count, DType dt, ReduceOp op) {
  const int P = c.t.size(), r = c.t.rank();
  Segments sg{count, dtype_size(dt), P};
  c.scratch.reserve(sg.max_len());
  ring_rs_phase(c, bytes_of(data), sg, dt, op, 0, bytes_of(c.scratch.data()));
  int have = mod(r + 1, P);
  finish_avg(bytes_of(data) + sg.off(have), sg.len(have) / sg.esize, dt, op, P);
  ring_ag_phase(c, bytes_of(data), sg, have);
}

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
    for (size_t j = 0; j < C; ++j) rx[j] = c.t.post_recv(parent, c.tag, bytes_of(data) + lo(j), len(j));
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

void allgather_ring(Ctx& c, const void* in, void* out, size_t bytes_per_rank) {
  const int P = c.t.size(), r = c.t.rank();
  std::memmove(bytes_of(out) + size_t(r) * bytes_per_rank, in, bytes_per_rank);
  Segments sg{size_t(P) * bytes_per_rank, 1, P};
  ring_ag_phase(c, bytes_of(out), sg, r);
}

// Ring reduce-scatter on a private copy of the input (shift -1 makes rank r end with
// segment r); the owned segment is then copied out.
void reduce_scatter_ring(Ctx& c, const void* in, void* out, size_t count, DType dt, ReduceOp op) {
  const int P = c.t.size(), r = c.t.rank();
  const size_t es = dtype_size(dt), total = size_t(P) * count * es;
  const size_t work_bytes = (total + 63) / 64 * 64;
  c.scratch.reserve(work_bytes + count * es);
  uint8_t* work = bytes_of(c.scratch.data());
  std::memcpy(work, in, total);
  Segments sg{size_t(P) * count, es, P};
  ring_rs_phase(c, work, sg, dt, op, -1, work + work_bytes);
  finish_avg(work + sg.off(r), count, dt, op, P);
  std::memcpy(out, work + sg.off(r), count * es);
}

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
