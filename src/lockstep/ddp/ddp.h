// DistributedDataParallel: wraps an nn::Model so that every rank keeps an identical replica.
// Construction checks that every rank built the same architecture and copies rank 0's
// parameters and buffers everywhere; each backward reduces gradients bucket by bucket while
// backward still runs; step() applies the optimizer (skipping steps whose averaged
// gradients are not finite, on every rank alike).
//
//   auto pg = comm::ProcessGroup::create("native", store, rank, world);
//   auto model = nn::make_model("fmnist-cnn", 42);
//   ddp::DistributedDataParallel ddp(*model, *pg, {});
//   nn::Sgd opt(*model, {.lr = 0.05f, .momentum = 0.9f});
//   for (...) {
//     model->zero_grad();
//     loss = ce.forward(ddp.forward(x), labels);
//     ddp.backward(ce.backward());     // returns with gradients averaged over ranks
//     ddp.step(opt);
//   }
//   { auto guard = ddp.no_sync(); ... }   // accumulate micro-batches without communicating
//
// LOCKSTEP_TIMELINE=trace.json writes a Chrome trace per rank (timeline.h).
#pragma once

#include <memory>

#include "lockstep/comm/process_group.h"
#include "lockstep/ddp/nn_adapter.h"
#include "lockstep/ddp/reducer.h"
#include "lockstep/ddp/timeline.h"
#include "lockstep/nn/optim.h"

namespace lockstep::ddp {

struct DdpOptions {
  ReducerOptions reducer;
  std::string comm_hook = "allreduce";  // see make_comm_hook(); or set_comm_hook()
  bool broadcast_buffers = true;        // copy rank 0's buffers before every forward
  bool gradient_sync = true;            // false: gradients stay local (ZeroOptimizer reduces them)
  int64_t check_replicas_every = 0;     // > 0: compare parameter hashes every n steps
  // Bitwise-reproducible runs for a fixed world size: buckets never rebuilt (their layout
  // depends only on the model) and launched in a fixed order. Also create the process group
  // with a fixed algorithm (Options::algorithm = "ring") and keep one compute thread.
  bool deterministic = false;
  Millis timeout{std::chrono::seconds(300)};  // every collective DDP waits for
  // Keep the gradients in memory the ranks share (ProcessGroup::alloc_shared, when the group
  // has shared memory): the buckets' all-reduces (or, without gradient_sync, ZeroOptimizer's
  // reduce-scatter) then read the peers' gradients in place, without copies through staging
  // buffers. The model's own buffer gets them back when DDP goes away.
  bool shared_gradients = true;
};

class DistributedDataParallel {
 public:
  DistributedDataParallel(nn::Model& model, comm::ProcessGroup& pg, DdpOptions opt = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  const nn::Tensor& forward(const nn::Tensor& x);
  // Model backward with gradients reduced as they become final; returns after all buckets
  // are averaged (or at once inside no_sync()).
  const StepResult& backward(const nn::Tensor& dy);
  // optimizer.step() unless the last backward's gradients were non-finite; returns whether
  // it stepped (false too when the optimizer declined: ZeroOptimizer checks the gradients it
  // averages itself). Runs the periodic replica check.
  bool step(nn::Optimizer& optimizer);
  // Collectives of one step with zero gradients, for ranks out of data (join.h).
  void shadow_step();

  // While alive, backward() accumulates gradients locally; the first backward after it
  // reduces the accumulated sum.
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& d) : d_(&d) {
      d.reducer_.set_sync(false);
      d.in_no_sync_ = true;
    }
    ~NoSync() {
      if (!d_) return;
      d_->reducer_.set_sync(d_->opt_.gradient_sync);
      d_->in_no_sync_ = false;
    }
    NoSync(NoSync&& o) noexcept : d_(o.d_) { o.d_ = nullptr; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;
    NoSync& operator=(NoSync&&) = delete;

   private:
    DistributedDataParallel* d_;
  };
  [[nodiscard]] NoSync no_sync() { return NoSync(*this); }

  void set_comm_hook(std::unique_ptr<CommHook> hook) { reducer_.set_comm_hook(std::move(hook)); }
  // Gradients are multiplied by `s` after each synchronising backward (not inside no_sync;
  // also at world size 1), e.g. 1/k for the mean over k accumulated micro-batches.
  void set_grad_scale(float s) { grad_scale_ = s; }
  // Join's factor (world / active ranks, or 1); multiplies the user's scale.
  void set_join_scale(float s) { join_scale_ = s; }
  void set_replica_checks(bool on) { checks_on_ = on; }

  nn::Model& module() { return model_; }
  ParamSource& params() { return params_; }
  Reducer& reducer() { return reducer_; }
  comm::ProcessGroup& process_group() { return pg_; }
  Timeline* timeline() { return timeline_.get(); }
  const DdpOptions& options() const { return opt_; }
  const StepResult& last_result() const { return last_; }
  int64_t steps() const { return steps_; }
  int64_t skipped_steps() const { return skipped_; }

 private:
  static ReducerOptions reducer_options(const DdpOptions& opt);

  nn::Model& model_;
  comm::ProcessGroup& pg_;
  DdpOptions opt_;
  ModelParams params_;
  std::unique_ptr<Timeline> timeline_;
  // Declared before reducer_, so destroyed after it (it waits for buckets in flight): the
  // gradients go back to the model's own buffer, then the shared memory is released.
  std::shared_ptr<std::byte[]> shared_grads_;
  struct GradsHome {
    ParamSource* moved = nullptr;  // set while the gradients live in shared_grads_
    ~GradsHome() {
      if (moved) moved->move_grads_to({});
    }
  } grads_home_;
  Reducer reducer_;
  StepResult last_;
  float grad_scale_ = 1.0f, join_scale_ = 1.0f;
  bool in_no_sync_ = false;
  bool checks_on_ = true;
  int64_t steps_ = 0, skipped_ = 0;
};

}  // namespace lockstep::ddp
