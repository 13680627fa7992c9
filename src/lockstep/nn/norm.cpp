// BatchNorm2d and LayerNorm. Statistics are accumulated in double: they sum up to N*H*W
// values, where float sums would lose the digits that finite-difference tests check.
#include <cmath>

#include "lockstep/core/error.h"
#include "lockstep/nn/layers.h"

namespace lockstep::nn {

BatchNorm2d::BatchNorm2d(int64_t channels, float eps, float momentum) : c_(channels), eps_(eps), momentum_(momentum) {
  if (channels <= 0 || !(eps > 0.0f) || momentum < 0.0f || momentum > 1.0f)
    LOCKSTEP_THROW(InvalidArgument, "BatchNorm2d(", channels, "): need channels > 0, eps > 0, 0 <= momentum <= 1");
  w_ = &add_parameter("weight", {c_}, Init::ones());
  b_ = &add_parameter("bias", {c_}, Init::zeros());
  mean_ = &add_buffer("running_mean", {c_}, 0.0f);
  var_ = &add_buffer("running_var", {c_}, 1.0f);
}

std::string BatchNorm2d::describe() const { return str_cat("BatchNorm2d(", c_, ")"); }

const Tensor& BatchNorm2d::forward(const Tensor& x) {
  if (x.rank() != 4 || x.dim(1) != c_)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": input ", x.shape().str(), " must be [N, ", c_, ", H, W]");
  const int64_t n = x.dim(0), plane = x.dim(2) * x.dim(3), count = n * plane;
  if (training() && count < 2)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": training needs more than one value per channel, got ",
                   x.shape().str());
  xhat_.resize(x.shape());
  y_.resize(x.shape());
  invstd_.resize(size_t(c_));
  for (int64_t c = 0; c < c_; ++c) {
    float mean, invstd;
    if (training()) {
      double s = 0.0, sq = 0.0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < plane; ++j) s += x[(i * c_ + c) * plane + j];
      const double mu = s / double(count);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < plane; ++j) {
          const double d = x[(i * c_ + c) * plane + j] - mu;
          sq += d * d;
        }
      const double var = sq / double(count);
      mean = float(mu);
      invstd = float(1.0 / std::sqrt(var + double(eps_)));
      float& rm = mean_->value()[size_t(c)];
      float& rv = var_->value()[size_t(c)];
      rm = (1.0f - momentum_) * rm + momentum_ * mean;
      rv = (1.0f - momentum_) * rv + momentum_ * float(sq / double(count - 1));
    } else {
      mean = mean_->value()[size_t(c)];
      invstd = 1.0f / std::sqrt(var_->value()[size_t(c)] + eps_);
    }
    invstd_[size_t(c)] = invstd;
    const float g = w_->value()[size_t(c)], b = b_->value()[size_t(c)];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < plane; ++j) {
        const int64_t k = (i * c_ + c) * plane + j;
        xhat_[k] = (x[k] - mean) * invstd;
        y_[k] = g * xhat_[k] + b;
      }
  }
  return y_;
}

const Tensor& BatchNorm2d::backward(const Tensor& dy) {
  LOCKSTEP_CHECK_EQ(dy.numel(), y_.numel(), describe(), ": gradient does not match output");
  const int64_t n = y_.dim(0), plane = y_.dim(2) * y_.dim(3), count = n * plane;
  dx_.resize(y_.shape());
  for (int64_t c = 0; c < c_; ++c) {
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < plane; ++j) {
        const int64_t k = (i * c_ + c) * plane + j;
        sdy += dy[k];
        sdyx += double(dy[k]) * xhat_[k];
      }
    w_->grad()[size_t(c)] += float(sdyx);
    b_->grad()[size_t(c)] += float(sdy);
    if (!needs_input_grad()) continue;
    const float g = w_->value()[size_t(c)] * invstd_[size_t(c)];
    // Training: the batch statistics depend on x, which adds the two mean terms.
    const float mdy = training() ? float(sdy / double(count)) : 0.0f;
    const float mdyx = training() ? float(sdyx / double(count)) : 0.0f;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < plane; ++j) {
        const int64_t k = (i * c_ + c) * plane + j;
        dx_[k] = g * (dy[k] - mdy - xhat_[k] * mdyx);
      }
  }
  grad_ready(*w_);
  grad_ready(*b_);
  return dx_;
}

LayerNorm::LayerNorm(int64_t features, float eps) : c_(features), eps_(eps) {
  if (features <= 0 || !(eps > 0.0f))
    LOCKSTEP_THROW(InvalidArgument, "LayerNorm(", features, "): need features > 0 and eps > 0");
  w_ = &add_parameter("weight", {c_}, Init::ones());
  b_ = &add_parameter("bias", {c_}, Init::zeros());
}

std::string LayerNorm::describe() const { return str_cat("LayerNorm(", c_, ")"); }

const Tensor& LayerNorm::forward(const Tensor& x) {
  if (x.rank() < 1 || x.dim(-1) != c_)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": input ", x.shape().str(), " must end in ", c_);
  const int64_t rows = x.numel() / c_;
  xhat_.resize(x.shape());
  y_.resize(x.shape());
  invstd_.resize(size_t(rows));
  const float* g = w_->value_data();
  const float* b = b_->value_data();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * c_;
    double s = 0.0, sq = 0.0;
    for (int64_t j = 0; j < c_; ++j) s += xr[j];
    const double mu = s / double(c_);
    for (int64_t j = 0; j < c_; ++j) sq += (xr[j] - mu) * (xr[j] - mu);
    const float invstd = float(1.0 / std::sqrt(sq / double(c_) + double(eps_)));
    invstd_[size_t(r)] = invstd;
    float* xh = xhat_.data() + r * c_;
    float* yr = y_.data() + r * c_;
    for (int64_t j = 0; j < c_; ++j) {
      xh[j] = (xr[j] - float(mu)) * invstd;
      yr[j] = g[j] * xh[j] + b[j];
    }
  }
  return y_;
}

const Tensor& LayerNorm::backward(const Tensor& dy) {
  LOCKSTEP_CHECK_EQ(dy.numel(), y_.numel(), describe(), ": gradient does not match output");
  const int64_t rows = y_.numel() / c_;
  dx_.resize(y_.shape());
  float* dg = w_->grad_data();
  float* db = b_->grad_data();
  const float* g = w_->value_data();
  for (int64_t r = 0; r < rows; ++r) {
    const float* d = dy.data() + r * c_;
    const float* xh = xhat_.data() + r * c_;
    double mdx = 0.0, mdxx = 0.0;
    for (int64_t j = 0; j < c_; ++j) {
      dg[j] += d[j] * xh[j];
      db[j] += d[j];
      const double dxh = double(d[j]) * g[j];
      mdx += dxh;
      mdxx += dxh * xh[j];
    }
    if (!needs_input_grad()) continue;
    const float a = float(mdx / double(c_)), bb = float(mdxx / double(c_)), inv = invstd_[size_t(r)];
    float* o = dx_.data() + r * c_;
    for (int64_t j = 0; j < c_; ++j) o[j] = inv * (d[j] * g[j] - a - xh[j] * bb);
  }
  grad_ready(*w_);
  grad_ready(*b_);
  return dx_;
}

}  // namespace lockstep::nn
