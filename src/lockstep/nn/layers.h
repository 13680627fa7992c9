// The layers. Each keeps what its backward needs (inputs, masks, statistics) from the last
// forward, and its output/gradient activations in tensors that are reused across steps.
// Shapes follow PyTorch: images NCHW, sequences [B, T, C], Linear weight [out, in],
// Conv2d weight [out, in, k, k], so weights can be exchanged with PyTorch unchanged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lockstep/nn/conv_dnnl.h"
#include "lockstep/nn/module.h"

namespace lockstep::nn {

// y = x W^T + b over the last dimension of x (any leading dimensions).
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  Parameter& weight() { return *w_; }
  Parameter* bias() { return b_; }

 private:
  int64_t in_, out_;
  Parameter* w_;
  Parameter* b_ = nullptr;
  Tensor x_, y_, dx_;
};

// 2-D convolution: on oneDNN's JIT kernels when lockstep is built with it (conv_dnnl.h),
// otherwise (or with LOCKSTEP_CONV=im2col) by im2col + GEMM, one sample at a time so that
// the column matrix stays in cache (see conv.cpp).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         bool bias = true);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  int64_t c_, oc_, k_, stride_, pad_;
  Parameter* w_;
  Parameter* b_ = nullptr;
  DnnlConvPtr dnnl_, dnnl_spare_;  // oneDNN primitives for the current and the previous shape
  bool ran_dnnl_ = false;          // the last forward ran on oneDNN
  Tensor x_;    // the input, kept for backward (columns are recomputed from it)
  Tensor col_;  // [C*K*K, Ho*Wo] columns of one sample
  Tensor tmp_;  // [C*K*K, Ho*Wo] column gradient of one sample
  Tensor y_, dx_;
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0);  // stride 0 = kernel
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  int64_t k_, stride_, pad_;
  Shape in_shape_;
  std::vector<int32_t> argmax_;  // index within the input plane, per output element
  Tensor y_, dx_;
};

// Average pooling; padded positions count in the divisor (PyTorch's count_include_pad).
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  int64_t k_, stride_, pad_;
  Shape in_shape_;
  Tensor y_, dx_;
};

class ReLU : public Module {
 public:
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override { return "ReLU"; }

 private:
  Tensor y_, dx_;
};

// GELU, tanh approximation (as GPT-2 and PyTorch's approximate="tanh").
class GELU : public Module {
 public:
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override { return "GELU(tanh)"; }

 private:
  Tensor x_, y_, dx_;
};

// Inverted dropout. The mask of element i in the s-th training forward is a pure function
// of (seed, s, i), so runs are reproducible and independent of other random draws.
class Dropout : public Module {
 public:
  explicit Dropout(float p, uint64_t seed = 0);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  float p_;
  uint64_t seed_;
  uint64_t step_ = 0;
  bool applied_ = false;
  Tensor mask_, y_, dx_;
};

// [N, ...] -> [N, prod(...)], a view (no copy).
class Flatten : public Module {
 public:
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override { return "Flatten"; }

 private:
  Shape in_shape_;
  Tensor y_, dx_;
};

// Batch normalisation over N, H, W per channel. Buffers running_mean/running_var (updated
// in training with `momentum`, unbiased variance, as PyTorch); eval mode uses them.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  int64_t c_;
  float eps_, momentum_;
  Parameter* w_;
  Parameter* b_;
  ModuleBuffer* mean_;
  ModuleBuffer* var_;
  std::vector<float> invstd_;
  Tensor xhat_, y_, dx_;
};

// Normalisation over the last dimension, with per-feature weight and bias.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t features, float eps = 1e-5f);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  int64_t c_;
  float eps_;
  Parameter* w_;
  Parameter* b_;
  std::vector<float> invstd_;
  Tensor xhat_, y_, dx_;
};

// Token ids -> vectors. The input holds ids as floats (exact below 2^24), shape [B, T];
// the output is [B, T, dim]. There is no input gradient.
class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, float init_std = 1.0f);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  int64_t vocab_, dim_;
  Parameter* w_;
  std::vector<int32_t> ids_;
  Tensor y_, dx_;
};

// Adds a learned position vector to each step of [B, T, C] (T <= max_len).
class PositionalEmbedding : public Module {
 public:
  PositionalEmbedding(int64_t max_len, int64_t dim, float init_std = 0.02f);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  int64_t max_len_, dim_;
  Parameter* w_;
  Tensor y_;
  Tensor dx_;  // view of dy: the input gradient is the output gradient
};

// Multi-head causal self-attention over [B, T, C]: qkv projection, softmax(q k^T / sqrt(d))
// masked to the past, output projection.
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t dim, int64_t heads);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  void for_each_child(const std::function<void(const std::string&, Module&)>& fn) override;
  void set_needs_input_grad(bool needs) override;

 private:
  int64_t dim_, heads_;
  Linear qkv_, proj_;
  int64_t b_ = 0, t_ = 0;
  Tensor att_;   // [B, H, T, T] softmax probabilities
  Tensor out_;   // [B, T, C] heads concatenated
  Tensor qkv_out_;  // view of qkv_'s output, kept for backward
  Tensor dqkv_;     // [B, T, 3C]
  std::vector<float> datt_;  // one row of d(attention)
};

// Runs children in order; backward in reverse.
class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential& add(std::unique_ptr<Module> m);  // named "0", "1", ...
  template <class M, class... Args>
  Sequential& emplace(Args&&... args) {
    return add(std::make_unique<M>(std::forward<Args>(args)...));
  }
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  void for_each_child(const std::function<void(const std::string&, Module&)>& fn) override;
  void set_needs_input_grad(bool needs) override;
  size_t size() const { return children_.size(); }
  Module& operator[](size_t i) { return *children_[i]; }

 private:
  std::vector<std::unique_ptr<Module>> children_;
};

// y = x + inner(x).
class Residual : public Module {
 public:
  explicit Residual(std::unique_ptr<Module> inner);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  void for_each_child(const std::function<void(const std::string&, Module&)>& fn) override;
  void set_needs_input_grad(bool needs) override;

 private:
  std::unique_ptr<Module> inner_;
  Tensor y_, dx_;
};

}  // namespace lockstep::nn
