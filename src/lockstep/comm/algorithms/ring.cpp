// Ring algorithms over a Transport (rows ring; all-gather and reduce-scatter): a pipelined
// reduce-scatter phase and all-gather phase around the ring of ranks.
#include "lockstep/comm/algorithms.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "lockstep/comm/algorithms/pair_util.h"
#include "lockstep/comm/reduce_kernels.h"

namespace lockstep::comm::algo {
namespace {

// The buffer cut in P segments of near-equal whole elements; offsets in bytes.
struct Segments {
  size_t count, esize;
  int parts;
  size_t off(int i) const { return count * size_t(i) / size_t(parts) * esize; }
  size_t len(int i) const { return off(i + 1) - off(i); }
  size_t max_len() const { return (count + size_t(parts) - 1) / size_t(parts) * esize; }
  // Chunk j of a segment: [j*chunk, min(len, (j+1)*chunk)) — possibly empty.
  size_t chunk_bytes() const { return std::max<size_t>(esize, kChunkBytes / esize * esize); }
  size_t nchunks() const {
    return std::max<size_t>(1, (max_len() + chunk_bytes() - 1) / chunk_bytes());
  }
  size_t chunk_lo(int seg, size_t j) const { return std::min(len(seg), j * chunk_bytes()); }
  size_t chunk_len(int seg, size_t j) const {
    return std::min(len(seg), (j + 1) * chunk_bytes()) - chunk_lo(seg, j);
  }
};

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

}  // namespace

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

}  // namespace lockstep::comm::algo
