// Collective algorithms over a Transport (any transport: tcp, shm pairs), one file each under
// algorithms/. Every function is called by all ranks of the transport with the same arguments
// except the data; `scratch` is a pooled buffer the algorithm may grow. Data sizes are in
// elements of `dtype`; f16/bf16 reductions are widened to f32 by the caller. Which all-reduce
// runs is the table's choice (algorithms/table.h: Plan::pair_allreduce).
#pragma once

#include <cstddef>
#include <cstdint>

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

void allreduce_ring(Ctx& c, void* data, size_t count, DType dt, ReduceOp op);
void allreduce_doubling(Ctx& c, void* data, size_t count, DType dt, ReduceOp op);
void allreduce_reduce_broadcast(Ctx& c, void* data, size_t count, DType dt, ReduceOp op);
void broadcast_tree(Ctx& c, void* data, size_t bytes, int root);
void reduce_tree(Ctx& c, void* data, size_t count, DType dt, ReduceOp op, int root);
void allgather_ring(Ctx& c, const void* in, void* out, size_t bytes_per_rank);
void reduce_scatter_ring(Ctx& c, const void* in, void* out, size_t count, DType dt, ReduceOp op);
void gather_linear(Ctx& c, const void* in, void* out, size_t bytes_per_rank, int root);
void scatter_linear(Ctx& c, const void* in, void* out, size_t bytes_per_rank, int root);
void alltoall_pairwise(Ctx& c, const void* in, void* out, size_t bytes_per_rank);
void barrier_dissemination(Ctx& c);

}  // namespace lockstep::comm::algo
