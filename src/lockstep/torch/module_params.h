// ModuleParams: the ParamSource (ddp/params.h) of a torch::nn::Module — what lockstep's
// Reducer sees of a LibTorch model. Parameters are the module's named_parameters() that
// require a gradient, in registration order (the order a forward usually uses them);
// buffers are its float32 named_buffers(); other buffers (BatchNorm's int64
// num_batches_tracked) are listed apart, with their own dtype, for broadcasting.
//
// Gradients live in one flat byte array owned here (or in storage given to move_grads_to,
// e.g. the process group's shared memory), and each parameter's .grad() is a tensor view of
// its slice (torch::from_blob, in the parameter's dtype): PyTorch's gradient_as_bucket_view.
// Autograd accumulates into the view in place; attach_grad(i) puts the view back when
// something replaced .grad() (an optimizer's zero_grad(set_to_none), or a first backward on
// an undefined gradient). Parameters may be float32, float64, float16 or bfloat16 (the
// reducer keeps one dtype per bucket); each slice starts aligned to its element size.
//
// A module on a GPU with device_buckets (its process group takes device pointers: nccl):
// the flat array is device memory on the module's GPU, the views are CUDA tensors, and the
// collectives read the buckets in place. The host never touches that memory: it is
// re-laid out with torch copies, and nonfinite() asks the GPU (grads_on_host() is false).
//
// Staged (a module on a GPU without device_buckets, or bucket_view false): .grad() stays
// the module's own tensor (on the module's device); attach_grad(i) copies gradient i into
// its slice of the host buckets as it becomes ready, return_grads() copies the averaged
// slices back. Copies wait for the tensors' current stream (a CUDA stream synchronisation,
// never a device-wide one).
//
// A module off the CPU (staged or not) has its parameter and buffer values read and
// written through host copies: state_to_host() refreshes them before a broadcast or a
// replica hash, state_from_host() writes them back.
//
// Limits today: contiguous CPU or CUDA tensors, all on one device; anything else is rejected
// at construction naming the parameter (wrap_problem).
#pragma once

#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "lockstep/core/dtype.h"
#include "lockstep/ddp/params.h"

namespace lockstep::torch {

// Why `module` cannot be wrapped, or "" when it can: every trainable parameter must be a
// contiguous CPU or CUDA tensor of a float dtype (f32 f64 f16 bf16), all on one device;
// buffers CPU or CUDA tensors of lockstep dtypes.
std::string wrap_problem(::torch::nn::Module& module);

class ModuleParams final : public ddp::ParamSource {
 public:
  // bucket_view false: staged even on the CPU. A module off the CPU is staged unless
  // device_buckets (the process group reads device memory in place) and bucket_view.
  explicit ModuleParams(::torch::nn::Module& module, bool bucket_view = true,
                        bool device_buckets = false);
  // Gradients that are views of this object's storage become tensors of their own.
  ~ModuleParams() override;
  ModuleParams(const ModuleParams&) = delete;
  ModuleParams& operator=(const ModuleParams&) = delete;

  size_t num_params() const override { return params_.size(); }
  const ddp::TensorInfo& param_info(size_t i) const override { return param_info_[i]; }
  // float32 parameters only (an InvalidArgument otherwise); the byte views serve every dtype.
  std::span<float> value(size_t i) override;
  std::span<float> grad(size_t i) override;
  std::span<std::byte> value_bytes(size_t i) override;
  std::span<std::byte> grad_bytes(size_t i) override {
    return {storage_.data() + offset_[i],
            param_info_[i].numel() * dtype_size(param_info_[i].dtype)};
  }
  bool set_grad_order(std::span<const size_t> order) override;
  // `storage` holds at least grad_storage_bytes() (as floats, rounded up).
  bool move_grads_to(std::span<float> storage) override;
  size_t grad_storage_bytes() const { return size_t(own_.nbytes()); }
  bool grads_on_host() const override { return device_.is_cpu(); }
  bool nonfinite(std::span<const std::byte> bytes, DType t) const override;
  // Where the gradient storage lies: the CPU, or the module's GPU (device buckets).
  c10::Device grads_device() const { return device_; }

  size_t num_buffers() const override { return buffers_.size(); }
  const ddp::TensorInfo& buffer_info(size_t i) const override { return buffer_info_[i]; }
  std::span<float> buffer(size_t i) override;

  // Buffers of other dtypes than float32, with lockstep's name for their dtype.
  struct OtherBuffer {
    ddp::TensorInfo info;
    at::Tensor tensor;
    at::Tensor host;  // what collectives read and write: `tensor`, or its host copy
  };
  std::vector<OtherBuffer>& other_buffers() { return other_buffers_; }

  const at::Tensor& param(size_t i) const { return params_[i]; }
  // Makes parameter i's .grad() the view of its slice, copying what autograd left elsewhere;
  // staged: copies .grad() into the slice (zeros where it is undefined).
  void attach_grad(size_t i);

  bool staged() const { return staged_; }
  // Staged only (a no-op otherwise): the reduced slices back into every .grad().
  void return_grads();
  // A module off the CPU only (no-ops otherwise): its parameter values and/or buffers into
  // their host copies, and back.
  void state_to_host(bool values, bool buffers) { copy_state(true, values, buffers); }
  void state_from_host(bool values, bool buffers) { copy_state(false, values, buffers); }

 private:
  void copy_grads_in();  // every parameter's .grad() -> its slice, where it is elsewhere
  void copy_state(bool to_host, bool values, bool buffers);
  void make_views(std::byte* base);                   // views_ over `base`, each at its offset_
  void install_views();                               // views_ as every .grad() (unless staged)
  at::Tensor bytes_at(std::byte* p, size_t n) const;  // n bytes at p, a tensor on device_
  // Lays the gradients out in `order`, each slice aligned to its element size; returns
  // the bytes needed.
  size_t lay_out(std::span<const size_t> order);

  bool staged_ = false;      // gradients copied into host buckets and back
  bool host_state_ = false;  // values and buffers read through host copies (module off the CPU)
  c10::Device device_{c10::kCPU};  // where own_ and the views lie
  std::vector<at::Tensor> params_, buffers_;
  // What value(i)/buffer(i) read: the tensors themselves, or their host copies.
  std::vector<at::Tensor> host_params_, host_buffers_;
  std::vector<ddp::TensorInfo> param_info_, buffer_info_;
  std::vector<OtherBuffer> other_buffers_;
  std::vector<size_t> offset_;    // offset_[i]: byte where parameter i's gradient starts
  at::Tensor own_;                // gradient storage (bytes on device_) unless moved elsewhere
  std::span<std::byte> storage_;  // own_'s memory or the storage given to move_grads_to
  std::vector<at::Tensor> views_;
};

}  // namespace lockstep::torch
