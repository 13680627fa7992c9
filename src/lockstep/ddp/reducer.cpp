#include "lockstep/ddp/reducer.h"

#include <algorithm>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"

namespace lockstep::ddp {
namespace {

std::vector<size_t> numels(const ParamSource& params) {
  std::vector<size_t> n(params.num_params());
  for (size_t i = 0; i < n.size(); ++i) n[i] = params.param_info(i).numel();
  return n;
}

std::vector<DType> dtypes(const ParamSource& params) {
  std::vector<DType> t(params.num_params());
  for (size_t i = 0; i < t.size(); ++i) t[i] = params.param_info(i).dtype;
  return t;
}

BucketPlan plan_for(std::span<const size_t> order, const ParamSource& params, const BucketOptions& opt) {
  return plan_buckets(order, numels(params), opt, sizeof(float), dtypes(params));
}

std::string names_of(const ParamSource& params, const std::vector<size_t>& ids, size_t max = 10) {
  std::string s;
  for (size_t k = 0; k < ids.size() && k < max; ++k) s += (k ? ", " : "") + params.param_info(ids[k]).name;
  if (ids.size() > max) s += str_cat(" and ", ids.size() - max, " more");
  return s;
}

}  // namespace

Reducer::Reducer(comm::ProcessGroup& pg, ParamSource& params, ReducerOptions opt)
    : pg_(pg), params_(params), opt_(opt), hook_(std::make_unique<AllreduceHook>()) {
  // The first plan follows the layout frameworks are expected to use: reverse order of use.
  std::vector<size_t> order(params.num_params());
  for (size_t k = 0; k < order.size(); ++k) order[k] = order.size() - 1 - k;
  install(plan_for(order, params, opt_.buckets));
}

Reducer::~Reducer() { drain(); }

void Reducer::drain() noexcept {
  for (size_t b = 0; b < pending_.size(); ++b) {
    if (!pending_[b].work.valid()) continue;
    try {
      pending_[b].work.wait(std::min<Clock::duration>(opt_.timeout, std::chrono::seconds(10)));
    } catch (const TimeoutError& e) {
      LOCKSTEP_LOG(warn, "ddp reducer: rank ", pg_.rank(), " ", where(b), " still in flight at teardown: ", e.what());
    } catch (const std::exception&) {
      // Failed like the bucket whose error is already on its way to the caller.
    }
    pending_[b] = {};
  }
}

void Reducer::install(BucketPlan plan) {
  plan_ = std::move(plan);
  storage_.bind(plan_, params_);
  if (storage_.copied_buckets() > 0 && !params_.grads_on_host())
    LOCKSTEP_THROW(InternalError, "rank ", pg_.rank(), ": ddp reducer: ", storage_.copied_buckets(),
                   " bucket(s) would be staged through a host copy, but the gradients are device "
                   "memory; the source must lay them out contiguously per bucket (set_grad_order)");
  tracker_.reset(plan_);
  pending_.assign(plan_.size(), {});
  launch_us_.assign(plan_.size(), 0);
  done_us_.assign(plan_.size(), 0);
}

void Reducer::set_comm_hook(std::unique_ptr<CommHook> hook) {
  if (in_backward_)
    LOCKSTEP_THROW(InvalidArgument, "Reducer::set_comm_hook: cannot change the hook in the middle of a backward pass");
  if (hook && hook->host_memory_only() && !params_.grads_on_host())
    LOCKSTEP_THROW(InvalidArgument, "rank ", pg_.rank(), ": comm hook '", hook->name(),
                   "' computes on the host, but these gradients are device memory the host cannot "
                   "read. Use the allreduce hook, or have the gradients staged through host memory "
                   "(lockstep::torch: choose the hook in DdpOptions::comm_hook at construction).");
  hook_ = hook ? std::move(hook) : std::make_unique<AllreduceHook>();
}

std::string Reducer::where(size_t b) const {
  return str_cat(plan_.describe(b, params_), " at step ", iteration_);
}

void Reducer::start_iteration() {
  tracker_.start_iteration();
  next_launch_ = 0;
  in_backward_ = true;
  for (size_t i : static_unused_) {
    if (tracker_.mark(i) != ReadyTracker::kNone) launch_ready();
  }
}

void Reducer::mark_ready(size_t i) {
  if (pg_.size() == 1 || !sync_) return;
  if (!in_backward_) start_iteration();
  if (timeline_) {  // when each gradient became final (lockstep train --profile re-buckets with it)
    const int64_t t = now_us();
    timeline_->add(str_cat("ready p", i), "grad", t, t, Timeline::kComputeTrack,
                   int64_t(params_.param_info(i).numel() * sizeof(float)));
  }
  if (tracker_.mark(i) != ReadyTracker::kNone) launch_ready();
  poll_in_flight();
}

void Reducer::mark_all_ready() {
  if (pg_.size() == 1 || !sync_) return;
  if (!in_backward_) start_iteration();
  for (const auto& bucket : plan_.buckets)
    for (size_t i : bucket)
      if (!tracker_.is_marked(i)) mark_ready(i);
}

void Reducer::launch_ready() {
  if (!opt_.overlap) return;
  while (next_launch_ < plan_.size() && tracker_.bucket_ready(next_launch_)) launch(next_launch_++);
}

void Reducer::launch(size_t b) {
  storage_.copy_in(b, params_);
  BucketView& v = storage_.view(b);
  GradBucket gb{b,          v.data,  v.params, v.offsets, &params_, iteration_,
                opt_.nonfinite != NonFinitePolicy::ignore, v.dtype, v.bytes};
  launch_us_[b] = now_us();
  done_us_[b] = 0;
  pending_[b] = hook_->launch(gb, pg_);
  // Backward goes on after every bucket but the last: start its all-reduce now. The last one
  // is waited for at once (finalize), so its waiter runs it without a thread hand-off.
  if (b + 1 < plan_.size()) pg_.start_now();
}

void Reducer::poll_in_flight() {
  for (size_t b = 0; b < next_launch_; ++b)
    if (done_us_[b] == 0 && pending_[b].work.valid() && pending_[b].work.is_completed()) done_us_[b] = now_us();
}

StepResult Reducer::finalize() {
  StepResult r;
  if (pg_.size() == 1 || !sync_) {
    in_backward_ = false;
    return r;
  }
  r.reduced = true;
  if (!in_backward_) start_iteration();  // a backward that marked nothing
  const int64_t t0 = now_us();
  try {
    handle_unused(r);
    if (!opt_.overlap)
      while (next_launch_ < plan_.size()) launch(next_launch_++);
    launch_ready();
    LOCKSTEP_CHECK_EQ(next_launch_, plan_.size(), "every bucket must be launched once all parameters are ready");
    for (size_t b = 0; b < plan_.size(); ++b) wait_bucket(b, r);
  } catch (...) {
    in_backward_ = false;
    drain();
    throw;
  }
  r.wait_us = double(now_us() - t0);
  if (!plan_.buckets.empty())  // communication in flight: first launch to last completion
    stats_.comm_us += double(*std::max_element(done_us_.begin(), done_us_.end()) -
                             *std::min_element(launch_us_.begin(), launch_us_.end()));
  if (timeline_) timeline_->add("finalize", "ddp", t0, now_us());
  stats_.wait_us += r.wait_us;
  ++stats_.steps;
  in_backward_ = false;
  if (iteration_ == 0 && opt_.static_graph) static_unused_ = r.unused;
  if (iteration_ == 0 && opt_.rebuild_buckets) rebuild();
  ++iteration_;
  if (!r.finite) {
    hook_->reset_state();
    if (opt_.nonfinite == NonFinitePolicy::error)
      LOCKSTEP_THROW(Error, "rank ", pg_.rank(), ": the averaged gradient of '", r.nonfinite_param,
                     "' holds NaN or Inf at step ", iteration_ - 1,
                     " (every rank stops here). Lower the learning rate, check the data, or use "
                     "NonFinitePolicy::skip to skip such steps.");
  }
  return r;
}

void Reducer::handle_unused(StepResult& r) {
  if (tracker_.all_ready()) return;
  std::vector<size_t> unused = tracker_.unmarked();
  if (!opt_.find_unused_parameters && !(opt_.static_graph && iteration_ == 0)) {
    LOCKSTEP_THROW(InvalidArgument, "rank ", pg_.rank(), ": ", unused.size(), " parameter(s) received no gradient at step ",
                   iteration_, ": ", names_of(params_, unused),
                   ". Every parameter must take part in the loss, or construct DDP with find_unused_parameters "
                   "(or static_graph when the unused set never changes). Other ranks will time out waiting.");
  }
  for (size_t i : unused)
    if (tracker_.mark(i) != ReadyTracker::kNone) launch_ready();
  r.unused = std::move(unused);
}

void Reducer::wait_bucket(size_t b, StepResult& r) {
  Pending& p = pending_[b];
  std::optional<bool> nonfinite;  // when the collective checked on the way
  try {
    if (p.work.valid()) p.work.wait(opt_.timeout);
    if (done_us_[b] == 0) done_us_[b] = now_us();
    if (p.finite && !p.finish) nonfinite = p.finite->nonfinite();  // a finish changes the data
    if (p.finish) p.finish(opt_.timeout);
  } catch (const TimeoutError& e) {
    // e says how long: the operation's own deadline (the process group's timeout) usually
    // passes first, with the precise error; opt_.timeout only bounds this wait.
    LOCKSTEP_THROW(TimeoutError, "rank ", pg_.rank(), ": DDP ", where(b), " was not reduced: ", e.what(),
                   ". A peer may have stopped, skipped this step, or have a different model.");
  } catch (const PeerError& e) {
    throw PeerError(e.peer_rank(), e.op(), str_cat("rank ", pg_.rank(), ": DDP ", where(b), ": ", e.what()));
  }
  p = {};
  storage_.copy_out(b, params_);
  if (timeline_)
    timeline_->add(str_cat("allreduce b", b), "comm", launch_us_[b], done_us_[b], Timeline::kCommTrack,
                   int64_t(storage_.view(b).data.size() * sizeof(float)));
  if (opt_.nonfinite != NonFinitePolicy::ignore && r.finite) check_finite(b, r, nonfinite);
}

void Reducer::check_finite(size_t b, StepResult& r, std::optional<bool> known) {
  const BucketView& v = storage_.view(b);
  if (known ? !*known : !params_.nonfinite(v.bytes, v.dtype)) return;
  r.finite = false;
  for (size_t k = 0; k < v.params.size(); ++k) {
    if (params_.nonfinite(params_.grad_bytes(v.params[k]), v.dtype)) {
      r.nonfinite_param = params_.param_info(v.params[k]).name;
      return;
    }
  }
}

void Reducer::rebuild() {
  // Rank 0's arrival order decides, so every rank builds identical buckets.
  const size_t n = params_.num_params();
  std::vector<int64_t> order(n);
  auto seen = tracker_.arrival_order();
  for (size_t k = 0; k < n; ++k) order[k] = int64_t(k < seen.size() ? seen[k] : k);
  pg_.broadcast(order.data(), n, DType::i64, 0).wait(opt_.timeout);
  std::vector<size_t> ord(order.begin(), order.end());
  BucketPlan next = plan_for(ord, params_, opt_.buckets);
  ++stats_.rebuilds;
  if (next.buckets == plan_.buckets) return;
  // Zero copy needs each new bucket contiguous; re-lay gradients out when it is not.
  BucketStorage probe;
  probe.bind(next, params_);
  if (probe.copied_buckets() > 0 && params_.set_grad_order(ord)) ++stats_.relayouts;
  install(std::move(next));
  if (storage_.copied_buckets() > 0)
    LOCKSTEP_LOG(info, "ddp reducer: ", storage_.copied_buckets(), " of ", plan_.size(),
                 " buckets are staged through a copy (the framework cannot re-lay gradients out)");
}

}  // namespace lockstep::ddp
