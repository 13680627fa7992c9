// ParamSource: everything DDP sees of a model — parameters (name, shape, dtype, value and
// gradient spans), buffers, and an optional way to re-lay gradients out. It is the seam
// between lockstep::ddp and a training framework: nn_adapter.h implements it for
// nn::Model; torch/module_params.h for LibTorch modules (every float dtype).
//
// Index i is the parameter's position in the order the forward pass uses them. The source
// calls Reducer::mark_ready(i) (or DistributedDataParallel does, through its hook) when
// gradient i is final for the current backward pass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lockstep/core/dtype.h"

namespace lockstep::ddp {

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::f32;
  size_t numel() const;
  std::string describe() const;  // "2.weight [512, 784] float32"
};

class ParamSource {
 public:
  virtual ~ParamSource() = default;

  virtual size_t num_params() const = 0;
  virtual const TensorInfo& param_info(size_t i) const = 0;
  // float32 parameters only (nn::Model's are all float32); code that serves every dtype
  // uses the byte views below.
  virtual std::span<float> value(size_t i) = 0;
  virtual std::span<float> grad(size_t i) = 0;
  // Value and gradient i as raw elements of param_info(i).dtype (f32, f64, f16 or bf16):
  // what buckets, comm hooks, broadcasts and replica hashes use. A float32-only source
  // need not override them.
  virtual std::span<std::byte> value_bytes(size_t i) { return std::as_writable_bytes(value(i)); }
  virtual std::span<std::byte> grad_bytes(size_t i) { return std::as_writable_bytes(grad(i)); }

  // Places gradients contiguously in `order` (a permutation of all indices), keeping their
  // contents, so that buckets stay zero-copy views. Returns false when the framework
  // cannot; the reducer then stages non-contiguous buckets through a copy.
  virtual bool set_grad_order(std::span<const size_t> order) { return false; }
  // Moves all gradients, keeping contents and layout, into `storage` (as many floats as all
  // parameters hold; the caller keeps it alive), or back into the framework's own memory
  // when empty. False when the framework cannot.
  virtual bool move_grads_to(std::span<float> storage) { return false; }

  // Whether the host may read and write the gradient memory. false: it is a GPU's (LibTorch
  // modules on the nccl backend): the reducer then keeps every bucket a view of it (no
  // staging copies), asks nonfinite() rather than scanning, and takes only comm hooks that
  // compute nothing on the host (CommHook::host_memory_only).
  virtual bool grads_on_host() const { return true; }
  // Whether `bytes`, a range of gradient memory holding elements of `t`, has a NaN or an
  // Inf. The default scans on the host; a source with grads_on_host() false overrides it.
  virtual bool nonfinite(std::span<const std::byte> bytes, DType t) const;

  // Non-learnable state replicas must agree on (BatchNorm running statistics).
  virtual size_t num_buffers() const { return 0; }
  virtual const TensorInfo& buffer_info(size_t i) const;
  virtual std::span<float> buffer(size_t i);

  void zero_grads();
};

}  // namespace lockstep::ddp
