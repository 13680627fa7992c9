// Reduce-then-broadcast all-reduce over a Transport (row reduce_broadcast): a binomial-tree
// reduce to rank 0, which finishes avg, then a binomial-tree broadcast of the result from it.
// 2 log2(P) (alpha + n beta): never chosen by default (doubling and the ring cost less), it is
// the example of adding an algorithm as one file and one row (docs/collectives.md), and a
// reference order: every rank ends with rank 0's bits. Force it with
// LOCKSTEP_ALGO=reduce_broadcast.
#include "lockstep/comm/algorithms.h"

namespace lockstep::comm::algo {

void allreduce_reduce_broadcast(Ctx& c, void* data, size_t count, DType dt, ReduceOp op) {
  reduce_tree(c, data, count, dt, op, 0);
  broadcast_tree(c, data, count * dtype_size(dt), 0);
}

}  // namespace lockstep::comm::algo
