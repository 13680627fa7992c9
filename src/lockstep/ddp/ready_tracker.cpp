#include "lockstep/ddp/ready_tracker.h"

#include "lockstep/core/error.h"

namespace lockstep::ddp {

void ReadyTracker::reset(const BucketPlan& plan) {
  plan_ = &plan;
  marked_.assign(plan.bucket_of.size(), 0);
  start_iteration();
}

void ReadyTracker::start_iteration() {
  std::fill(marked_.begin(), marked_.end(), 0);
  pending_.assign(plan_->size(), 0);
  for (size_t b = 0; b < plan_->size(); ++b) pending_[b] = plan_->buckets[b].size();
  order_.clear();
  order_.reserve(marked_.size());
  marked_count_ = 0;
}

size_t ReadyTracker::mark(size_t i) {
  if (i >= marked_.size())
    LOCKSTEP_THROW(InvalidArgument, "mark_ready(", i, "): there are only ", marked_.size(), " parameters");
  if (marked_[i])
    LOCKSTEP_THROW(InvalidArgument, "mark_ready(", i, "): parameter ", i,
                   " was already marked ready in this backward pass. DDP needs exactly one final gradient "
                   "per parameter per backward; a parameter used twice in forward must report once, at the end.");
  marked_[i] = 1;
  ++marked_count_;
  order_.push_back(i);
  const size_t b = plan_->bucket_of[i];
  return --pending_[b] == 0 ? b : kNone;
}

std::vector<size_t> ReadyTracker::unmarked() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < marked_.size(); ++i)
    if (!marked_[i]) out.push_back(i);
  return out;
}

}  // namespace lockstep::ddp
