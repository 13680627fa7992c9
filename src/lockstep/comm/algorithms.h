// Collective algorithms over a Transport (any transport: tcp, shm pairs). Every function is
// called by all ranks of the transport with the same arguments except the data; `scratch`
// is a pooled buffer the algorithm may grow. Data sizes are in elements of `dtype`;
// f16/bf16 reductions are widened to f32 by the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "lockstep/comm/transport.h"
#include "lockstep/comm/types.h"
#include "lockstep/core/buffer.h"
#include "lockstep/core/dtype.h"

namespace lockstep::comm::algo {

struct Ctx {
  Transport& t;
  const OpInfo& info;
  Deadline deadline;
  uint64_t tag;  // base tag of this operation (its sequence number)
  AlignedBuffer& scratch;
};

enum class AllreduceAlgo { ring, doubling };

// Which all-reduce to use for `bytes` on `world` ranks: recursive doubling while latency
// dominates (small messages), pipelined ring when bandwidth does. `forced` from
// Options::algorithm / LOCKSTEP_ALGO ("ring", "doubling"; anything else = auto).
AllreduceAlgo choose_allreduce(size_t bytes, int world, const std::string& forced);

void allreduce_ring(Ctx& c, void* data, size_t count, DType dt, ReduceOp op);
void allreduce_doubling(Ctx& c, void* data, size_t count, DType dt, ReduceOp op);
void broadcast_tree(Ctx& c, void* data, size_t bytes, int root);
void reduce_tree(Ctx& c, void* data, size_t count, DType dt, ReduceOp op, int root);
void allgather_ring(Ctx& c, const void* in, void* out, size_t bytes_per_rank);
void reduce_scatter_ring(Ctx& c, const void* in, void* out, size_t count, DType dt, ReduceOp op);
void gather_linear(Ctx& c, const void* in, void* out, size_t bytes_per_rank, int root);
void scatter_linear(Ctx& c, const void* in, void* out, size_t bytes_per_rank, int root);
void alltoall_pairwise(Ctx& c, const void* in, void* out, size_t bytes_per_rank);
void barrier_dissemination(Ctx& c);

}  // namespace lockstep::comm::algo
