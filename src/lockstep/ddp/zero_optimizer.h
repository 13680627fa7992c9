// ZeroOptimizer: ZeRO stage 1 — optimizer state sharded across ranks. Each rank owns a
// contiguous 1/W slice of the flattened parameters and keeps momentum only for it. It is an
// nn::Optimizer (reduces_gradients() is true), so DDP::step and the trainer drive it as any other.
//
//   step():  reduce-scatter the gradients (average)  -> this rank's slice of the gradient
//            every rank agrees whether all are finite  -> if not, no rank changes anything
//            SGD (torch.optim.SGD semantics) on the slice with its own momentum
//            all-gather the updated slices             -> every rank has all parameters
//
// Use it with DistributedDataParallel constructed with gradient_sync = false (DDP then
// only broadcasts the initial state and checks the architecture; gradients stay local
// until step()); DistributedDataParallel::step(zero) counts a declined step as skipped. The flat order is the source's gradient layout when parameters and
// gradients are each one contiguous range with the same offsets (nn::Model before any
// re-layout): then nothing is copied. Otherwise values and gradients are staged.
// The last N mod W elements are all-reduced and updated by every rank.
//
// Checkpoints address the state by global flat offsets, so that it reloads at any world size:
// state_range() / tail_range() say which [begin, end) of the flat order this rank holds,
// state(range) reads it and import_state(offset, values) writes whatever part of a global
// piece falls inside them (train/zero_checkpoint.h builds the shard files on these).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/core/buffer.h"
#include "lockstep/ddp/params.h"
#include "lockstep/nn/optim.h"

namespace lockstep::ddp {

struct ZeroSgdOptions {
  float lr = 0.01f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};

struct ZeroMemoryReport {
  size_t state_bytes_unsharded = 0;  // what each rank would hold without ZeRO
  size_t state_bytes_local = 0;      // what this rank holds
  size_t scratch_bytes = 0;          // slice buffers (and staging when not zero copy)
  size_t saved_bytes() const { return state_bytes_unsharded - state_bytes_local; }
  std::string str() const;
};

// [begin, end) of the flattened parameter vector.
struct FlatRange {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
  bool operator==(const FlatRange&) const = default;
};

class ZeroOptimizer : public nn::Optimizer {
 public:
  ZeroOptimizer(comm::ProcessGroup& pg, ParamSource& params, ZeroSgdOptions opt,
                Millis timeout = std::chrono::seconds(300));
  // Returns false, on every rank alike, when an averaged gradient (in any rank's slice or the
  // tail) is NaN or Inf: then neither the weights nor the momentum were changed.
  bool step() override;
  bool reduces_gradients() const override { return true; }
  // Only "step": the momentum is sharded (state(range) below; train/zero_checkpoint.h saves it).
  std::vector<nn::NamedSpan> state() override;
  int64_t skipped_steps() const { return skipped_; }
  ZeroMemoryReport memory() const;
  bool zero_copy() const { return zero_copy_; }
  size_t shard_size() const { return shard_; }

  // The flat order: N elements, parameter i (of the ParamSource) at param_offset(i).
  size_t total() const { return total_; }
  size_t param_offset(size_t i) const { return offsets_[i]; }
  // False with momentum 0 (plain SGD keeps no state; the ranges below then hold nothing).
  bool has_state() const { return momentum_.size() > 0; }
  // This rank's slice [r N/W, (r+1) N/W), and the tail [W (N/W), N) that every rank holds.
  FlatRange state_range() const;
  FlatRange tail_range() const;
  // The momentum of `range`, which must lie inside state_range() or tail_range().
  std::span<const float> state(FlatRange range) const;
  // Copies the part of the global piece [offset, offset + values.size()) that falls inside
  // state_range() or tail_range() into the momentum; returns how many elements it copied.
  size_t import_state(size_t offset, std::span<const float> values);

 private:
  void bind_flat();
  void stage_in();
  void stage_out();
  void sgd(float* w, const float* g, float* b, size_t n) const;
  bool agree_finite(std::span<const float> slice, std::span<const float> tail);
  // The momentum elements of `range` (inside the slice or the tail), or an empty span.
  std::span<float> local(FlatRange range) const;

  comm::ProcessGroup& pg_;
  ParamSource& params_;
  ZeroSgdOptions opt_;
  Millis timeout_;
  size_t total_ = 0, shard_ = 0, tail_ = 0;  // N, N / W, N mod W
  int64_t skipped_ = 0;                     // steps not taken (non-finite gradients)
  bool zero_copy_ = false;
  std::span<float> values_, grads_;         // flat N
  std::vector<size_t> offsets_;             // per parameter, into the flat order
  AlignedBuffer stage_values_, stage_grads_;
  AlignedBuffer momentum_;                  // shard_ + tail_
  AlignedBuffer grad_slice_;                // shard_
  // shard_, in ProcessGroup::alloc_shared memory: on shm the all-gather reads it in place.
  std::shared_ptr<std::byte[]> value_slice_;
};

}  // namespace lockstep::ddp
