// Embeddings and causal self-attention: the pieces of the char-level GPT.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/nn/layers.h"

namespace lockstep::nn {

Embedding::Embedding(int64_t vocab, int64_t dim, float init_std) : vocab_(vocab), dim_(dim) {
  if (vocab <= 0 || dim <= 0 || vocab >= (int64_t(1) << 24))
    LOCKSTEP_THROW(InvalidArgument, "Embedding(", vocab, ", ", dim, "): need 0 < vocab < 2^24 and dim > 0");
  w_ = &add_parameter("weight", {vocab, dim}, Init::normal(0.0f, init_std));
}

std::string Embedding::describe() const { return str_cat("Embedding(", vocab_, ", ", dim_, ")"); }

const Tensor& Embedding::forward(const Tensor& x) {
  if (x.rank() < 1 || x.rank() >= Shape::kMaxRank)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": input ", x.shape().str(), " must be token ids of rank 1..5");
  std::array<int64_t, Shape::kMaxRank> dims{};
  std::copy(x.shape().dims().begin(), x.shape().dims().end(), dims.begin());
  dims[size_t(x.rank())] = dim_;
  y_.resize(Shape(std::span<const int64_t>(dims.data(), size_t(x.rank() + 1))));
  ids_.resize(size_t(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = x[i];
    if (!(v >= 0.0f && v < float(vocab_) && v == std::floor(v)))
      LOCKSTEP_THROW(InvalidArgument, describe(), ": element ", i, " = ", v, " is not a token id in [0, ", vocab_, ")");
    ids_[size_t(i)] = int32_t(v);
    std::memcpy(y_.data() + i * dim_, w_->value_data() + int64_t(ids_[size_t(i)]) * dim_, size_t(dim_) * sizeof(float));
  }
  return y_;
}

const Tensor& Embedding::backward(const Tensor& dy) {
  LOCKSTEP_CHECK_EQ(dy.numel(), y_.numel(), describe(), ": gradient does not match output");
  float* g = w_->grad_data();
  for (size_t i = 0; i < ids_.size(); ++i) {
    float* row = g + int64_t(ids_[i]) * dim_;
    const float* d = dy.data() + int64_t(i) * dim_;
    for (int64_t j = 0; j < dim_; ++j) row[j] += d[j];
  }
  grad_ready(*w_);
  return dx_;  // token ids have no gradient
}

PositionalEmbedding::PositionalEmbedding(int64_t max_len, int64_t dim, float init_std) : max_len_(max_len), dim_(dim) {
  if (max_len <= 0 || dim <= 0)
    LOCKSTEP_THROW(InvalidArgument, "PositionalEmbedding(", max_len, ", ", dim, "): sizes must be positive");
  w_ = &add_parameter("weight", {max_len, dim}, Init::normal(0.0f, init_std));
}

std::string PositionalEmbedding::describe() const { return str_cat("PositionalEmbedding(", max_len_, ", ", dim_, ")"); }

const Tensor& PositionalEmbedding::forward(const Tensor& x) {
  if (x.rank() != 3 || x.dim(1) > max_len_ || x.dim(2) != dim_)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": input ", x.shape().str(), " must be [B, T <= ", max_len_, ", ",
                   dim_, "]");
  y_.resize(x.shape());
  const int64_t b = x.dim(0), tc = x.dim(1) * dim_;
  const float* w = w_->value_data();
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < tc; ++j) y_[i * tc + j] = x[i * tc + j] + w[j];
  return y_;
}

const Tensor& PositionalEmbedding::backward(const Tensor& dy) {
  LOCKSTEP_CHECK_EQ(dy.numel(), y_.numel(), describe(), ": gradient does not match output");
  const int64_t b = y_.dim(0), tc = y_.dim(1) * dim_;
  float* g = w_->grad_data();
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < tc; ++j) g[j] += dy[i * tc + j];
  grad_ready(*w_);
  dx_ = dy;  // addition passes the gradient through unchanged
  return dx_;
}

CausalSelfAttention::CausalSelfAttention(int64_t dim, int64_t heads)
    : dim_(dim), heads_(heads), qkv_(dim, 3 * dim), proj_(dim, dim) {
  if (heads <= 0 || dim % heads != 0)
    LOCKSTEP_THROW(InvalidArgument, "CausalSelfAttention: dim ", dim, " must be a positive multiple of heads ", heads);
}

std::string CausalSelfAttention::describe() const {
  return str_cat("CausalSelfAttention(", dim_, ", heads=", heads_, ")");
}

void CausalSelfAttention::for_each_child(const std::function<void(const std::string&, Module&)>& fn) {
  fn("qkv", qkv_);
  fn("proj", proj_);
}

const Tensor& CausalSelfAttention::forward(const Tensor& x) {
  if (x.rank() != 3 || x.dim(2) != dim_)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": input ", x.shape().str(), " must be [B, T, ", dim_, "]");
  b_ = x.dim(0);
  t_ = x.dim(1);
  qkv_out_ = qkv_.forward(x);
  const Tensor& qkv = qkv_out_;
  const int64_t hd = dim_ / heads_, c3 = 3 * dim_;
  const float scale = 1.0f / std::sqrt(float(hd));
  att_.resize({b_, heads_, t_, t_});
  out_.resize({b_, t_, dim_});
  att_.zero();
  out_.zero();
  for (int64_t b = 0; b < b_; ++b)
    for (int64_t h = 0; h < heads_; ++h)
      for (int64_t t = 0; t < t_; ++t) {
        const float* q = qkv.data() + (b * t_ + t) * c3 + h * hd;
        float* p = att_.data() + ((b * heads_ + h) * t_ + t) * t_;
        float mx = -INFINITY;
        for (int64_t s = 0; s <= t; ++s) {
          const float* k = qkv.data() + (b * t_ + s) * c3 + dim_ + h * hd;
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += q[d] * k[d];
          p[s] = dot * scale;
          mx = std::max(mx, p[s]);
        }
        float sum = 0.0f;
        for (int64_t s = 0; s <= t; ++s) sum += (p[s] = std::exp(p[s] - mx));
        float* o = out_.data() + (b * t_ + t) * dim_ + h * hd;
        for (int64_t s = 0; s <= t; ++s) {
          p[s] /= sum;
          const float* v = qkv.data() + (b * t_ + s) * c3 + 2 * dim_ + h * hd;
          for (int64_t d = 0; d < hd; ++d) o[d] += p[s] * v[d];
        }
      }
  return proj_.forward(out_);
}

const Tensor& CausalSelfAttention::backward(const Tensor& dy) {
  const Tensor& dout = proj_.backward(dy);
  const Tensor& qkv = qkv_out_;
  const int64_t hd = dim_ / heads_, c3 = 3 * dim_;
  const float scale = 1.0f / std::sqrt(float(hd));
  dqkv_.resize(qkv.shape());
  dqkv_.zero();
  datt_.resize(size_t(t_));
  for (int64_t b = 0; b < b_; ++b)
    for (int64_t h = 0; h < heads_; ++h)
      for (int64_t t = 0; t < t_; ++t) {
        const float* p = att_.data() + ((b * heads_ + h) * t_ + t) * t_;
        const float* go = dout.data() + (b * t_ + t) * dim_ + h * hd;
        // d(score_s) = p_s (d(p_s) - sum_s' p_s' d(p_s')): the softmax Jacobian.
        float dot_pd = 0.0f;
        for (int64_t s = 0; s <= t; ++s) {
          const int64_t vrow = (b * t_ + s) * c3 + 2 * dim_ + h * hd;
          float d = 0.0f;
          for (int64_t k = 0; k < hd; ++k) {
            d += go[k] * qkv[vrow + k];
            dqkv_[vrow + k] += p[s] * go[k];
          }
          datt_[size_t(s)] = d;
          dot_pd += p[s] * d;
        }
        const int64_t qrow = (b * t_ + t) * c3 + h * hd;
        for (int64_t s = 0; s <= t; ++s) {
          const float ds = p[s] * (datt_[size_t(s)] - dot_pd) * scale;
          const int64_t krow = (b * t_ + s) * c3 + dim_ + h * hd;
          for (int64_t k = 0; k < hd; ++k) {
            dqkv_[qrow + k] += ds * qkv[krow + k];
            dqkv_[krow + k] += ds * qkv[qrow + k];
          }
        }
      }
  return qkv_.backward(dqkv_);
}

void CausalSelfAttention::set_needs_input_grad(bool needs) {
  needs_input_grad_ = needs;
  qkv_.set_needs_input_grad(needs);
}

}  // namespace lockstep::nn
