// Barrier over the control lines (row shm_barrier): every rank publishes its epoch and waits
// for everyone's (ShmGroup::sync).
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_barrier(shm::ShmGroup& g, shm::ShmOp& o) {
  g.sync(o.info, o.dl);
}

}  // namespace lockstep::comm::algo
