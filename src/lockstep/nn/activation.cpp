// Element-wise layers and the shape-only Flatten.
#include <cmath>

#include "lockstep/core/error.h"
#include "lockstep/nn/kernels.h"
#include "lockstep/nn/layers.h"
#include "lockstep/nn/rng.h"

namespace lockstep::nn {
namespace {
void check_same(const Tensor& dy, const Tensor& y, const std::string& who) {
  if (dy.numel() != y.numel())
    LOCKSTEP_THROW(InvalidArgument, who, ": gradient ", dy.shape().str(), " does not match output ", y.shape().str());
}
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluC = 0.044715f;
}  // namespace

const Tensor& ReLU::forward(const Tensor& x) {
  y_.resize(x.shape());
  kernels::relu_forward(x.data(), y_.data(), x.numel());
  return y_;
}

const Tensor& ReLU::backward(const Tensor& dy) {
  check_same(dy, y_, "ReLU");
  dx_.resize(y_.shape());
  kernels::relu_backward(y_.data(), dy.data(), dx_.data(), y_.numel());
  return dx_;
}

const Tensor& GELU::forward(const Tensor& x) {
  x_ = x;
  y_.resize(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = x[i];
    y_[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + kGeluC * v * v * v)));
  }
  return y_;
}

const Tensor& GELU::backward(const Tensor& dy) {
  check_same(dy, y_, "GELU");
  dx_.resize(x_.shape());
  for (int64_t i = 0; i < x_.numel(); ++i) {
    const float v = x_[i];
    const float u = kSqrt2OverPi * (v + kGeluC * v * v * v);
    const float t = std::tanh(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluC * v * v);
    dx_[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
  }
  return dx_;
}

Dropout::Dropout(float p, uint64_t seed) : p_(p), seed_(seed) {
  if (!(p >= 0.0f && p < 1.0f)) LOCKSTEP_THROW(InvalidArgument, "Dropout: p must be in [0, 1), got ", p);
}

std::string Dropout::describe() const { return str_cat("Dropout(", p_, ")"); }

const Tensor& Dropout::forward(const Tensor& x) {
  y_.resize(x.shape());
  applied_ = training() && p_ > 0.0f;
  if (!applied_) {
    y_.copy_from(x);
    return y_;
  }
  mask_.resize(x.shape());
  // Keep element i when its hash is at or above p * 2^32; survivors scale by 1/(1-p).
  const uint64_t threshold = uint64_t(double(p_) * 4294967296.0);
  const float scale = 1.0f / (1.0f - p_);
  const uint64_t base = step_++ * uint64_t(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) {
    mask_[i] = hash_u32(seed_, base + uint64_t(i)) >= threshold ? scale : 0.0f;
    y_[i] = x[i] * mask_[i];
  }
  return y_;
}

const Tensor& Dropout::backward(const Tensor& dy) {
  check_same(dy, y_, "Dropout");
  dx_.resize(y_.shape());
  if (!applied_) {
    dx_.copy_from(dy);
    return dx_;
  }
  for (int64_t i = 0; i < dy.numel(); ++i) dx_[i] = dy[i] * mask_[i];
  return dx_;
}

const Tensor& Flatten::forward(const Tensor& x) {
  if (x.rank() < 1) LOCKSTEP_THROW(InvalidArgument, "Flatten: input must have a batch dimension");
  in_shape_ = x.shape();
  const int64_t n = x.dim(0);
  y_ = x.reshape({n, n == 0 ? 0 : x.numel() / n});
  return y_;
}

const Tensor& Flatten::backward(const Tensor& dy) {
  check_same(dy, y_, "Flatten");
  dx_ = dy.reshape(in_shape_);
  return dx_;
}

}  // namespace lockstep::nn
