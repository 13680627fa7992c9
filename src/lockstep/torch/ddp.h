// lockstep::torch::DistributedDataParallel: data-parallel training of any torch::nn::Module
// (LibTorch, PyTorch's C++ frontend, which has no DDP of its own), on lockstep's process
// groups and its own Reducer — the same buckets, overlap, comm hooks and checks as
// lockstep::ddp::DistributedDataParallel, through the ParamSource seam (module_params.h).
//
//   auto pg = lockstep::comm::ProcessGroup::create("native", store, rank, world);
//   Net net;                                          // a torch::nn::Module(Holder)
//   lockstep::torch::DistributedDataParallel ddp(*net, *pg);   // rank 0's weights everywhere
//   torch::optim::SGD opt(net->parameters(), 0.05);
//   for (...) {
//     net->zero_grad(/*set_to_none=*/false);         // or opt.zero_grad(): see below
//     auto loss = torch::nll_loss(ddp.forward(net, x), y);    // or net->forward(x)
//     loss.backward();       // returns with gradients averaged over ranks
//     opt.step();            // or ddp.step(opt): skips steps with NaN/Inf gradients
//   }
//   { auto guard = ddp.no_sync(); ... backward ... }   // accumulate without communicating
//
// As in PyTorch's Python DDP: each parameter's gradient accumulator has a hook that marks
// it ready, so full buckets are all-reduced while backward goes on; the first hook of a
// backward queues a callback that autograd runs at the end of that backward, which waits
// for every bucket (bounded by DdpOptions::timeout), so `loss.backward()` returns only with
// averaged gradients, and an error (a peer gone, an unused parameter) comes out of it.
// Gradients are views into the buckets' storage (gradient_as_bucket_view); while DDP
// lives, every parameter's .grad() is such a view, defined (zeros before the first backward),
// unless something sets it to none: LibTorch 2.x's Optimizer::zero_grad() does by default
// (1.13's zeroes in place). That stays correct — autograd then makes a new gradient, which
// the hook copies into its view and puts the view back — at the cost of that allocation and
// copy per parameter and step. Module::zero_grad(false) (the same in both versions) zeroes
// the views in place and keeps them.
// A module on a GPU keeps its buckets on the GPU where the process group reads device
// memory in place (nccl, Capability::device_memory) and the comm hook computes nothing on the
// host (allreduce): .grad() views device memory, and each collective is ordered after the
// gradients' CUDA stream by an event (comm::DeviceOrder), never by a synchronisation. Else
// (the native backend sharing one GPU among ranks, or the fp16/bf16/PowerSGD hooks) it is
// staged: each gradient is copied into host buckets when ready and back when averaged.
// Either way, values and buffers go through host copies for broadcasts and replica hashes
// (TorchOptions, module_params.h). The module must be on the GPU the nccl group uses
// (LOCKSTEP_NCCL_DEVICE, else LOCAL_RANK): another is named on every rank at construction.
// Construct DDP on the stream the forward will run on: the gradient accumulators it holds
// (one per parameter, for its hooks) keep the stream that was current when they were made.
//
// Differences from Python DDP: buffers are broadcast from rank 0 by forward()/sync_buffers()
// (a torch::nn::Module has no generic forward to intercept); backward must run on the
// thread that owns this object (CPU autograd runs hooks on the calling thread; CUDA autograd
// runs them, one at a time, on its device thread while backward() blocks the caller). Options
// are lockstep's DdpOptions: bucket caps, comm_hook, broadcast_buffers, find_unused /
// static_graph (reducer), check_replicas_every (counted by step()), shared_gradients.
#pragma once

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "lockstep/comm/process_group.h"
#include "lockstep/ddp/ddp.h"
#include "lockstep/ddp/reducer.h"
#include "lockstep/torch/module_params.h"

namespace lockstep::torch {

// What lockstep::torch adds to ddp::DdpOptions.
struct TorchOptions {
  // Each parameter's .grad() is a view of its slice of the bucket storage (PyTorch's
  // gradient_as_bucket_view): no copies. false: .grad() stays the module's own tensor, copied
  // into the buckets as it becomes ready and back once averaged. A module on a GPU is staged
  // so unless its process group reads device memory in place (module_params.h).
  bool gradient_as_bucket_view = true;
};

// Why a module on `module_device` cannot keep its gradient buckets on its GPU in a group of
// `backend` that reads the memory of CUDA device `group_device` in place, or "" when it can
// (the module is on that GPU, or not on a GPU). The constructor asks it on every rank when
// the buckets would stay on the GPU.
std::string device_problem(c10::Device module_device, const std::string& backend, int group_device);

class DistributedDataParallel {
 public:
  // Collective: checks every rank holds the same architecture (an error naming the first
  // difference, on every rank), then copies rank 0's parameters and buffers everywhere.
  // `module` must outlive this object and keep its parameters while wrapped.
  DistributedDataParallel(::torch::nn::Module& module, comm::ProcessGroup& pg,
                          ddp::DdpOptions opt = {}, TorchOptions torch_opt = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Checks the module's parameters are still those wrapped (an error naming the change
  // otherwise), copies rank 0's buffers everywhere (when broadcast_buffers and the module
  // has buffers), then net->forward(args...). `net` is the wrapped module's holder or pointer.
  template <class Net, class... Args>
  decltype(auto) forward(Net& net, Args&&... args) {
    check_unchanged("forward");
    sync_buffers();
    return net->forward(std::forward<Args>(args)...);
  }
  void sync_buffers();

  // optimizer.step() unless the last backward's averaged gradients held NaN/Inf (every rank
  // skips alike); returns whether it stepped. Runs the periodic replica check.
  bool step(::torch::optim::Optimizer& optimizer);
  // Collective: throws on every rank unless all ranks hold bit-identical parameters
  // (ddp::verify_replicas_identical, reading the current values of a module off the CPU).
  void verify_replicas(int64_t step);

  // While alive, backward accumulates gradients locally; the first backward after it
  // reduces the accumulated sum (as lockstep's and PyTorch's no_sync()).
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& d) : d_(&d) { d.reducer_.set_sync(false); }
    ~NoSync() {
      if (d_) d_->reducer_.set_sync(d_->opt_.gradient_sync);
    }
    NoSync(NoSync&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;
    NoSync& operator=(NoSync&&) = delete;

   private:
    DistributedDataParallel* d_;
  };
  [[nodiscard]] NoSync no_sync() { return NoSync(*this); }

  // A hook that computes on the host (CommHook::host_memory_only: fp16, bf16, PowerSGD) is
  // refused while the gradients are on a GPU (device buckets); name it in
  // DdpOptions::comm_hook instead, which stages them through host buckets.
  void set_comm_hook(std::unique_ptr<ddp::CommHook> hook) {
    reducer_.set_comm_hook(std::move(hook));
  }

  ::torch::nn::Module& module() { return module_; }
  ModuleParams& params() { return params_; }
  ddp::Reducer& reducer() { return reducer_; }
  comm::ProcessGroup& process_group() { return pg_; }
  const ddp::DdpOptions& options() const { return opt_; }
  // The last synchronising backward's result (reduced, finite, unused parameters).
  const ddp::StepResult& last_result() const { return last_; }
  int64_t steps() const { return steps_; }
  int64_t skipped_steps() const { return skipped_; }

 private:
  // Runs the collective checks of a module before ModuleParams reads it (wrap_problem and
  // device_problem on every rank, all ranks throw when one fails).
  static ::torch::nn::Module& checked(::torch::nn::Module& module, comm::ProcessGroup& pg,
                                      Millis timeout, bool device_buckets);
  // Throws (naming the parameter) when the module's trainable parameters are no longer the
  // tensors and storage that were wrapped: added, re-registered, frozen, moved or cast.
  void check_unchanged(const char* when);
  std::string change_at(size_t k);
  void on_grad_ready(size_t i);
  void end_of_backward();
  // Device buckets: makes the collectives issued while `after` lives wait (on the GPU) for
  // the work queued so far on the gradients' current CUDA stream. Nothing on the CPU.
  void order_after_current_stream(std::optional<comm::DeviceOrder>& after) const;
  void broadcast_other_buffers();

  ::torch::nn::Module& module_;
  comm::ProcessGroup& pg_;
  ddp::DdpOptions opt_;
  const bool device_buckets_;  // a GPU module's gradient buckets stay on it (ModuleParams)
  ModuleParams params_;
  std::unique_ptr<ddp::Timeline> timeline_;
  // As in ddp::DistributedDataParallel: destroyed after the reducer (which waits for buckets
  // in flight), the gradients go back to params_' own storage, then shared memory is freed.
  std::shared_ptr<std::byte[]> shared_grads_;
  struct GradsHome {
    ddp::ParamSource* moved = nullptr;
    ~GradsHome() {
      if (moved) moved->move_grads_to({});
    }
  } grads_home_;
  ddp::Reducer reducer_;
  struct Hook {
    std::shared_ptr<::torch::autograd::Node> accumulator;
    uintptr_t key = 0;
  };
  std::vector<Hook> hooks_;
  std::vector<const void*> wrapped_data_;  // each parameter's data when wrapped
  ddp::StepResult last_;
  bool end_queued_ = false;
  int64_t steps_ = 0, skipped_ = 0;
};

}  // namespace lockstep::torch
