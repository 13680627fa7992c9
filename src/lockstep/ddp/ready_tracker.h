// ReadyTracker: which gradients are final in the current backward pass, which buckets that
// completes, and the order they arrived in (used once to rebuild buckets). It knows nothing
// about communication; the Reducer asks it "did this mark complete a bucket?".
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "lockstep/ddp/bucket.h"

namespace lockstep::ddp {

class ReadyTracker {
 public:
  static constexpr size_t kNone = size_t(-1);

  void reset(const BucketPlan& plan);  // a new plan: every count restarts
  void start_iteration();              // a new backward pass
  // Marks parameter i; returns the bucket this completed, or kNone. Throws InvalidArgument
  // (naming the parameter through `name_of`) when i was already marked in this pass.
  size_t mark(size_t i);
  bool is_marked(size_t i) const { return marked_[i] != 0; }
  bool bucket_ready(size_t b) const { return pending_[b] == 0; }
  bool all_ready() const { return marked_count_ == marked_.size(); }
  // Parameters not marked in this pass, in index order.
  std::vector<size_t> unmarked() const;
  // Parameters in the order they were marked in this pass.
  std::span<const size_t> arrival_order() const { return order_; }

 private:
  const BucketPlan* plan_ = nullptr;
  std::vector<char> marked_;
  std::vector<size_t> pending_;  // per bucket: parameters still to come
  std::vector<size_t> order_;
  size_t marked_count_ = 0;
};

}  // namespace lockstep::ddp
