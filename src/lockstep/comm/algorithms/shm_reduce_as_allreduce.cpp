// Reduce as an all-reduce (row shm_reduce): every rank gets the result (non-roots' buffers
// are unspecified anyway), through whichever all-reduce row the plan picks for the size.
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_reduce_as_allreduce(shm::ShmGroup& g, shm::ShmOp& o) {
  g.run(Collective::allreduce, o);
}

}  // namespace lockstep::comm::algo
