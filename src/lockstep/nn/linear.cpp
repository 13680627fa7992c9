#include <algorithm>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/nn/blas.h"
#include "lockstep/nn/layers.h"

namespace lockstep::nn {

Linear::Linear(int64_t in, int64_t out, bool bias) : in_(in), out_(out) {
  if (in <= 0 || out <= 0) LOCKSTEP_THROW(InvalidArgument, "Linear(", in, ", ", out, "): sizes must be positive");
  w_ = &add_parameter("weight", {out, in}, Init::torch_default(in));
  if (bias) b_ = &add_parameter("bias", {out}, Init::torch_default(in));
}

std::string Linear::describe() const { return str_cat("Linear(", in_, ", ", out_, b_ ? "" : ", bias=false", ")"); }

const Tensor& Linear::forward(const Tensor& x) {
  if (x.rank() < 1 || x.dim(-1) != in_)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": input ", x.shape().str(), " must end in ", in_);
  const int64_t m = x.numel() / in_;
  Shape s = x.shape();
  s[s.rank() - 1] = out_;
  y_.resize(s);
  x_ = x;
  float beta = 0.0f;
  if (b_ != nullptr) {
    // Bias preloaded into y, then GEMM accumulates (beta = 1): no second pass over y.
    const float* b = b_->value_data();
    for (int64_t r = 0; r < m; ++r) std::memcpy(y_.data() + r * out_, b, size_t(out_) * sizeof(float));
    beta = 1.0f;
  }
  gemm(false, true, m, out_, in_, 1.0f, x.data(), in_, w_->value_data(), in_, beta, y_.data(), out_);
  return y_;
}

const Tensor& Linear::backward(const Tensor& dy) {
  const int64_t m = x_.numel() / in_;
  LOCKSTEP_CHECK_EQ(dy.numel(), m * out_, describe(), ": gradient ", dy.shape().str(), " does not match output");
  gemm(true, false, out_, in_, m, 1.0f, dy.data(), out_, x_.data(), in_, 1.0f, w_->grad_data(), in_);
  grad_ready(*w_);
  if (b_ != nullptr) {
    float* db = b_->grad_data();
    for (int64_t r = 0; r < m; ++r) {
      const float* row = dy.data() + r * out_;
      for (int64_t j = 0; j < out_; ++j) db[j] += row[j];
    }
    grad_ready(*b_);
  }
  if (!needs_input_grad()) return dx_;
  dx_.resize(x_.shape());
  gemm(false, false, m, in_, out_, 1.0f, dy.data(), out_, w_->value_data(), in_, 0.0f, dx_.data(), in_);
  return dx_;
}

}  // namespace lockstep::nn
