// ModuleParams: the ParamSource (ddp/params.h) of a torch::nn::Module — what lockstep's
// Reducer sees of a LibTorch model. Parameters are the module's named_parameters() that
// require a gradient, in registration order (the order a forward usually uses them);
// buffers are its float32 named_buffers(); other buffers (BatchNorm's int64
// num_batches_tracked) are listed apart, with their own dtype, for broadcasting.
//
// Gradients live in one flat float array owned here (or in storage given to move_grads_to,
// e.g. the process group's shared memory), and each parameter's .grad() is a tensor view of
// its slice (torch::from_blob): PyTorch's gradient_as_bucket_view. Autograd accumulates into
// the view in place; attach_grad(i) puts the view back when something replaced .grad()
// (an optimizer's zero_grad(set_to_none), or a first backward on an undefined gradient).
//
// Limits today: the ParamSource seam is float-only, so parameters must be float32, on the
// CPU and contiguous; anything else is rejected at construction naming the parameter.
#pragma once

#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "lockstep/core/dtype.h"
#include "lockstep/ddp/params.h"

namespace lockstep::torch {

class ModuleParams final : public ddp::ParamSource {
 public:
  explicit ModuleParams(::torch::nn::Module& module);
  // Gradients that are views of this object's storage become tensors of their own.
  ~ModuleParams() override;
  ModuleParams(const ModuleParams&) = delete;
  ModuleParams& operator=(const ModuleParams&) = delete;

  size_t num_params() const override { return params_.size(); }
  const ddp::TensorInfo& param_info(size_t i) const override { return param_info_[i]; }
  std::span<float> value(size_t i) override;
  std::span<float> grad(size_t i) override {
    return {storage_.data() + offset_[i], param_info_[i].numel()};
  }
  bool set_grad_order(std::span<const size_t> order) override;
  bool move_grads_to(std::span<float> storage) override;

  size_t num_buffers() const override { return buffers_.size(); }
  const ddp::TensorInfo& buffer_info(size_t i) const override { return buffer_info_[i]; }
  std::span<float> buffer(size_t i) override;

  // Buffers of other dtypes than float32, with lockstep's name for their dtype.
  struct OtherBuffer {
    ddp::TensorInfo info;
    at::Tensor tensor;
  };
  std::vector<OtherBuffer>& other_buffers() { return other_buffers_; }

  const at::Tensor& param(size_t i) const { return params_[i]; }
  // Makes parameter i's .grad() the view of its slice, copying what autograd left elsewhere.
  void attach_grad(size_t i);

 private:
  void copy_grads_in();  // every parameter's .grad() -> its slice, where it is elsewhere
  void point_grads_at(float* base);  // views over `base`, installed as .grad()

  std::vector<at::Tensor> params_, buffers_;
  std::vector<ddp::TensorInfo> param_info_, buffer_info_;
  std::vector<OtherBuffer> other_buffers_;
  std::vector<size_t> offset_;  // offset_[i]: where parameter i's gradient starts
  std::vector<float> own_;      // gradient storage unless moved elsewhere
  std::span<float> storage_;    // own_ or the storage given to move_grads_to
  std::vector<at::Tensor> views_;
};

}  // namespace lockstep::torch
