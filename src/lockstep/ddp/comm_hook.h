// Communication hooks: how one bucket of gradients becomes the average over all ranks.
// The Reducer calls launch() on the backward thread as soon as a bucket is full; the hook
// starts its collective(s) and returns at once. finalize() later waits for the returned
// Work and runs `finish` (decompression, a second collective...), after which the bucket
// must hold the averaged gradients.
//
// Write your own by deriving from CommHook:
//   class MyHook : public CommHook {
//     std::string name() const override { return "my"; }
//     Pending launch(GradBucket& b, comm::ProcessGroup& pg) override {
//       return {pg.allreduce(b.data.data(), b.data.size(), DType::f32, comm::ReduceOp::avg), {}};
//     }
//   };
// Rule: every rank must issue the same collectives in the same order (buckets are
// launched in index order on every rank, and finished in index order).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/core/buffer.h"
#include "lockstep/ddp/params.h"

namespace lockstep::ddp {

struct GradBucket {
  size_t index = 0;
  std::span<float> data;           // contiguous gradients of a float32 bucket
  std::span<const size_t> params;  // parameter indices in it
  std::span<const size_t> offsets; // offsets[k]: element where params[k] starts in data
  const ParamSource* source = nullptr;  // names and shapes
  int64_t iteration = 0;           // synchronised steps done so far
  // The reducer checks the averaged bucket for NaN/Inf: a hook may have its collective do it
  // on the way (ProcessGroup::allreduce_check_finite); otherwise the reducer scans.
  bool check_finite = false;
  // A bucket of another dtype (f64, f16, bf16: LibTorch models) has empty `data`; its
  // gradients are `bytes`. Hooks that work in float32 (compression, PowerSGD) reduce such
  // buckets in their own dtype instead, with average_in_own_dtype().
  DType dtype = DType::f32;
  std::span<std::byte> bytes{};
};


struct Pending {
  comm::Work work;  // invalid when nothing is in flight
  std::function<void(Millis timeout)> finish;  // optional; runs after `work` completed
  std::shared_ptr<comm::FiniteCheck> finite;   // optional: allreduce_check_finite's answer
};

// One all-reduce (ReduceOp::avg) of the bucket in place, in its dtype (f16/bf16 accumulate
// in f32 inside the collective).
Pending average_in_own_dtype(GradBucket& bucket, comm::ProcessGroup& pg);

class CommHook {
 public:
  virtual ~CommHook() = default;
  virtual std::string name() const = 0;
  virtual Pending launch(GradBucket& bucket, comm::ProcessGroup& pg) = 0;
  // Whether the hook reads or writes the bucket on the host (compression, PowerSGD): it then
  // cannot serve gradients the host may not touch (ParamSource::grads_on_host false). A hook
  // that only hands the bucket to collectives says false.
  virtual bool host_memory_only() const { return true; }
  // The step these gradients belonged to was skipped (non-finite values): forget any
  // state derived from them (error feedback).
  virtual void reset_state() {}
};

// Plain average: one all-reduce (ReduceOp::avg) in place. The default.
class AllreduceHook final : public CommHook {
 public:
  std::string name() const override { return "allreduce"; }
  Pending launch(GradBucket& bucket, comm::ProcessGroup& pg) override;
  bool host_memory_only() const override { return false; }
};

// Casts a float32 bucket (pre-divided by the world size, so the sum cannot overflow where the
// average would not) to float16 or bfloat16, all-reduces the half-size buffer, and casts
// back: half the bytes on the wire for ~3 (f16) or ~2 (bf16) significant digits.
class CompressHook final : public CommHook {
 public:
  explicit CompressHook(DType wire);  // DType::f16 or DType::bf16
  std::string name() const override;
  Pending launch(GradBucket& bucket, comm::ProcessGroup& pg) override;

 private:
  DType wire_;
  std::deque<AlignedBuffer> buffers_;  // per bucket, reused (deque: stable while others grow)
};

// "allreduce" (or "avg"), "fp16", "bf16", "powersgd" (rank 1 unless "powersgd:<rank>").
std::unique_ptr<CommHook> make_comm_hook(const std::string& name);

}  // namespace lockstep::ddp
