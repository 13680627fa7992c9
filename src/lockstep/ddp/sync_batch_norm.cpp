#include "lockstep/ddp/sync_batch_norm.h"

#include <cmath>

#include "lockstep/core/error.h"

namespace lockstep::ddp {

SyncBatchNorm::SyncBatchNorm(int64_t channels, comm::ProcessGroup& pg, float eps, float momentum, Millis timeout)
    : pg_(pg), c_(channels), eps_(eps), momentum_(momentum), timeout_(timeout) {
  if (channels <= 0 || !(eps > 0.0f) || momentum < 0.0f || momentum > 1.0f)
    LOCKSTEP_THROW(InvalidArgument, "SyncBatchNorm(", channels, "): need channels > 0, eps > 0, 0 <= momentum <= 1");
  w_ = &add_parameter("weight", {c_}, nn::Init::ones());
  b_ = &add_parameter("bias", {c_}, nn::Init::zeros());
  mean_ = &add_buffer("running_mean", {c_}, 0.0f);
  var_ = &add_buffer("running_var", {c_}, 1.0f);
}

std::string SyncBatchNorm::describe() const { return str_cat("SyncBatchNorm(", c_, ", world=", pg_.size(), ")"); }

// Global per-channel mean and inverse std (all ranks), and the running statistics update.
void SyncBatchNorm::statistics(const nn::Tensor& x, std::vector<float>& mean) {
  const int64_t n = x.dim(0), plane = x.dim(2) * x.dim(3);
  sums_.assign(size_t(2 * c_ + 1), 0.0);
  for (int64_t c = 0; c < c_; ++c)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < plane; ++j) {
        const double v = x[(i * c_ + c) * plane + j];
        sums_[size_t(c)] += v;
        sums_[size_t(c_ + c)] += v * v;
      }
  sums_[size_t(2 * c_)] = double(n * plane);
  pg_.allreduce(sums_.data(), sums_.size(), DType::f64, comm::ReduceOp::sum).wait(timeout_);
  total_ = sums_[size_t(2 * c_)];
  if (total_ < 2)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": training needs more than one value per channel over all ranks");
  for (int64_t c = 0; c < c_; ++c) {
    const double mu = sums_[size_t(c)] / total_;
    const double var = std::max(0.0, sums_[size_t(c_ + c)] / total_ - mu * mu);
    mean[size_t(c)] = float(mu);
    invstd_[size_t(c)] = float(1.0 / std::sqrt(var + double(eps_)));
    float& rm = mean_->value()[size_t(c)];
    float& rv = var_->value()[size_t(c)];
    rm = (1.0f - momentum_) * rm + momentum_ * float(mu);
    rv = (1.0f - momentum_) * rv + momentum_ * float(var * total_ / (total_ - 1));
  }
}

const nn::Tensor& SyncBatchNorm::forward(const nn::Tensor& x) {
  if (x.rank() != 4 || x.dim(1) != c_)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": input ", x.shape().str(), " must be [N, ", c_, ", H, W]");
  const int64_t n = x.dim(0), plane = x.dim(2) * x.dim(3);
  xhat_.resize(x.shape());
  y_.resize(x.shape());
  invstd_.resize(size_t(c_));
  std::vector<float> mean(static_cast<size_t>(c_));
  if (training()) {
    statistics(x, mean);
  } else {
    for (int64_t c = 0; c < c_; ++c) {
      mean[size_t(c)] = mean_->value()[size_t(c)];
      invstd_[size_t(c)] = 1.0f / std::sqrt(var_->value()[size_t(c)] + eps_);
    }
  }
  for (int64_t c = 0; c < c_; ++c) {
    const float g = w_->value()[size_t(c)], b = b_->value()[size_t(c)];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < plane; ++j) {
        const int64_t k = (i * c_ + c) * plane + j;
        xhat_[k] = (x[k] - mean[size_t(c)]) * invstd_[size_t(c)];
        y_[k] = g * xhat_[k] + b;
      }
  }
  return y_;
}

const nn::Tensor& SyncBatchNorm::backward(const nn::Tensor& dy) {
  LOCKSTEP_CHECK_EQ(dy.numel(), y_.numel(), describe(), ": gradient does not match output");
  const int64_t n = y_.dim(0), plane = y_.dim(2) * y_.dim(3);
  sums_.assign(size_t(2 * c_), 0.0);
  for (int64_t c = 0; c < c_; ++c)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < plane; ++j) {
        const int64_t k = (i * c_ + c) * plane + j;
        sums_[size_t(c)] += dy[k];
        sums_[size_t(c_ + c)] += double(dy[k]) * xhat_[k];
      }
  for (int64_t c = 0; c < c_; ++c) {  // local sums: DDP averages them like any gradient
    w_->grad()[size_t(c)] += float(sums_[size_t(c_ + c)]);
    b_->grad()[size_t(c)] += float(sums_[size_t(c)]);
  }
  grad_ready(*w_);
  grad_ready(*b_);
  if (!needs_input_grad()) return dx_;
  dx_.resize(y_.shape());
  const bool global = training();
  if (global) pg_.allreduce(sums_.data(), sums_.size(), DType::f64, comm::ReduceOp::sum).wait(timeout_);
  const double count = global ? total_ : double(n * plane);
  for (int64_t c = 0; c < c_; ++c) {
    const float g = w_->value()[size_t(c)] * invstd_[size_t(c)];
    const float mdy = global ? float(sums_[size_t(c)] / count) : 0.0f;
    const float mdyx = global ? float(sums_[size_t(c_ + c)] / count) : 0.0f;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < plane; ++j) {
        const int64_t k = (i * c_ + c) * plane + j;
        dx_[k] = g * (dy[k] - mdy - xhat_[k] * mdyx);
      }
  }
  return dx_;
}

}  // namespace lockstep::ddp
