// Reducer: turns "gradient i is final" calls into averaged gradients, overlapping the
// all-reduce of each bucket with the rest of backward.
//
//   Reducer reducer(pg, params, {});          // params: a ParamSource (nn_adapter.h)
//   model.on_grad_ready([&](size_t i) { reducer.mark_ready(i); });
//   ... forward, loss, backward ...           // full buckets start reducing during backward
//   StepResult r = reducer.finalize();        // waits (bounded), averages; r.finite
//   if (r.finite) optimizer.step();
//
// It composes three small pieces: BucketPlan/BucketStorage (bucket.h: which gradients go
// together, zero-copy views), ReadyTracker (ready_tracker.h: counts), and a CommHook
// (comm_hook.h: how a bucket is reduced). Buckets are launched strictly in index order on
// every rank, so collectives match across ranks even when readiness order differs.
//
// After the first synchronised step the buckets are rebuilt once in the order gradients
// actually became ready (rank 0's order, broadcast so every rank agrees). When that order
// differs from the gradient layout, the source is asked to re-lay its gradients out
// (ParamSource::set_grad_order; nn::Model supports it) so buckets stay zero copy; a source
// that cannot gets staged (copying) buckets instead.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/ddp/bucket.h"
#include "lockstep/ddp/comm_hook.h"
#include "lockstep/ddp/ready_tracker.h"
#include "lockstep/ddp/timeline.h"

namespace lockstep::ddp {

// What to do when the averaged gradients hold NaN or Inf. The decision is the same on every
// rank without an extra message: a non-finite value on any rank makes the reduced sum
// non-finite on all ranks (NaN and Inf propagate through the all-reduce), so the flag
// travels inside the gradient reduction itself.
enum class NonFinitePolicy { skip, error, ignore };

struct ReducerOptions {
  BucketOptions buckets;
  bool rebuild_buckets = true;  // once, after the first step, in observed ready order
  bool overlap = true;          // false: launch every bucket only in finalize (for measuring)
  // Parameters that got no gradient: an error naming them, unless find_unused_parameters
  // (they are reduced with whatever their gradient holds, zeros after zero_grad). With
  // static_graph the set found in the first step is assumed fixed: those parameters are
  // marked ready at the start of each backward, so their buckets do not wait for finalize.
  bool find_unused_parameters = false;
  bool static_graph = false;
  NonFinitePolicy nonfinite = NonFinitePolicy::skip;
  Millis timeout{std::chrono::seconds(300)};  // per bucket wait
};

struct StepResult {
  bool reduced = false;  // false for world size 1 and inside no_sync
  bool finite = true;    // false: some averaged gradient is NaN/Inf (same on every rank)
  std::string nonfinite_param;  // the first such parameter, by bucket order
  std::vector<size_t> unused;   // parameters marked ready by finalize (no gradient)
  double wait_us = 0;           // finalize's time blocked on communication
};

struct ReducerStats {
  int64_t steps = 0;
  double comm_us = 0;     // per step, first bucket launch -> last completion seen, summed
  double wait_us = 0;     // sum of time finalize blocked (the part not hidden)
  int64_t rebuilds = 0;
  int64_t relayouts = 0;  // rebuilds that re-laid gradients out
};

class Reducer {
 public:
  Reducer(comm::ProcessGroup& pg, ParamSource& params, ReducerOptions opt = {});
  ~Reducer();  // waits (bounded) for buckets still in flight: their memory is the model's
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  void set_comm_hook(std::unique_ptr<CommHook> hook);
  CommHook& comm_hook() { return *hook_; }
  void set_timeline(Timeline* tl) { timeline_ = tl; }
  // false inside no_sync(): gradients accumulate locally, nothing is reduced.
  void set_sync(bool sync) { sync_ = sync; }
  bool sync() const { return sync_; }

  void mark_ready(size_t i);
  // Marks every parameter not yet marked, in bucket order (Join's shadow steps).
  void mark_all_ready();
  StepResult finalize();

  const BucketPlan& plan() const { return plan_; }
  const BucketStorage& storage() const { return storage_; }
  const ReducerStats& stats() const { return stats_; }
  int64_t iteration() const { return iteration_; }
  const ReducerOptions& options() const { return opt_; }
  // Whether parameter i was marked ready in the backward in progress.
  bool marked(size_t i) const { return tracker_.is_marked(i); }
  // static_graph: the parameters the first step found unused, marked ready at the start of
  // each later backward (their gradient memory must be final by then).
  const std::vector<size_t>& static_unused() const { return static_unused_; }
  // Binds the buckets again after the gradients moved (ParamSource::move_grads_to).
  void rebind() { storage_.bind(plan_, params_); }

 private:
  void start_iteration();
  void launch_ready();
  void launch(size_t b);
  void poll_in_flight();
  void wait_bucket(size_t b, StepResult& r);
  void handle_unused(StepResult& r);
  // `known`: the collective's own NaN/Inf answer, when it gave one (else the bucket is scanned).
  void check_finite(size_t b, StepResult& r, std::optional<bool> known);
  void rebuild();
  void install(BucketPlan plan);
  void drain() noexcept;
  std::string where(size_t b) const;

  comm::ProcessGroup& pg_;
  ParamSource& params_;
  ReducerOptions opt_;
  std::unique_ptr<CommHook> hook_;
  Timeline* timeline_ = nullptr;

  BucketPlan plan_;
  BucketStorage storage_;
  ReadyTracker tracker_;
  std::vector<Pending> pending_;
  std::vector<int64_t> launch_us_, done_us_;
  std::vector<size_t> static_unused_;
  size_t next_launch_ = 0;
  bool in_backward_ = false;
  bool sync_ = true;
  int64_t iteration_ = 0;
  ReducerStats stats_;
};

}  // namespace lockstep::ddp
