// Join: training on uneven inputs without hanging. A rank with more batches than another
// would otherwise wait forever in a gradient all-reduce the other never joins. With Join,
// every step starts with one tiny all-reduce counting the ranks that still have data; a rank
// that ran out calls finish(), which keeps issuing the same collectives as a real step
// (with zero gradients) until every rank has run out, then copies the most advanced
// replica to everyone.
//
//   Join join(ddp);
//   for (const Batch* b; (b = loader.next()); ) {
//     join.begin_step();
//     ... ddp.forward / backward / step ...
//   }
//   join.finish();   // returns when all ranks are done; replicas identical again
//
// Gradients of a step are averaged over the initial world size (joined ranks contribute
// zeros), as PyTorch does, unless divide_by_initial_world_size is false. Collectives a
// model issues inside forward (SyncBatchNorm) cannot be shadowed.
#pragma once

#include <cstdint>

#include "lockstep/ddp/ddp.h"

namespace lockstep::ddp {

struct JoinOptions {
  bool divide_by_initial_world_size = true;
};

class Join {
 public:
  explicit Join(DistributedDataParallel& ddp, JoinOptions opt = {});
  // Collective: call before each step while this rank has data. Returns how many ranks
  // still have data this step.
  int begin_step();
  // Collective: this rank is out of data. Shadows the remaining steps of the others;
  // returns how many it shadowed.
  int64_t finish();

 private:
  int count_active(int me);
  DistributedDataParallel& ddp_;
  JoinOptions opt_;
  bool finished_ = false;
};

}  // namespace lockstep::ddp
