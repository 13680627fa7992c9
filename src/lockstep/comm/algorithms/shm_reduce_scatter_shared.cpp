// Reduce-scatter of inputs inside shared blocks (row shm_reduce_scatter_shared): after a
// barrier each rank folds its piece from every rank's block at once (rank order, as
// everywhere), with no staging; the second barrier keeps each input unchanged until every
// peer has read its piece.
#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_reduce_scatter_shared(shm::ShmGroup& g, shm::ShmOp& o) {
  const size_t piece = o.count * dtype_size(o.dt) * size_t(g.rank());
  g.sync_shared(o.info, o.dl);
  const void** srcs = g.sources();
  for (int r = 0; r < g.world(); ++r) srcs[r] = reinterpret_cast<uint8_t*>(g.shared_buf(r)) + piece;
  reduce_many_finish(o.out, nullptr, srcs, g.world(), o.count, o.dt, o.op, g.world());
  g.sync(o.info, o.dl);
}

}  // namespace lockstep::comm::algo
