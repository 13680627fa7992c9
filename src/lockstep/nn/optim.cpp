#include "lockstep/nn/optim.h"

#include <cmath>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/nn/kernels.h"

namespace lockstep::nn {

Optimizer::Optimizer(Model& model, float lr) : Optimizer(lr) { model_ = &model; }

Optimizer::Optimizer(float lr) : lr_(lr) {
  if (!(lr >= 0.0f)) LOCKSTEP_THROW(InvalidArgument, "optimizer: learning rate must be >= 0, got ", lr);
}

Model& Optimizer::model() const {
  LOCKSTEP_CHECK(model_ != nullptr, "optimizer: per-parameter state needs the nn::Model it was built on");
  return *model_;
}

std::span<float> Optimizer::make_state(AlignedBuffer& buf) {
  const size_t n = size_t(model().num_params());
  buf = AlignedBuffer((n + 1) * sizeof(float));
  std::memset(buf.data(), 0, buf.size());
  return buf.as<float>().first(n);
}

void Optimizer::add_per_param(std::vector<NamedSpan>& out, std::span<float> flat, const std::string& suffix) {
  for (Parameter* p : model().parameters())
    out.push_back({p->name() + "." + suffix, flat.subspan(p->value_offset(), size_t(p->numel()))});
}

void Optimizer::load_state(std::span<const NamedConstSpan> saved) {
  for (NamedSpan& dst : state()) {
    const NamedConstSpan* src = nullptr;
    for (const NamedConstSpan& s : saved)
      if (s.name == dst.name) src = &s;
    if (src == nullptr)
      LOCKSTEP_THROW(InvalidArgument, "optimizer state: '", dst.name, "' is missing from the saved state; ",
                     "was it saved from a different model or optimizer?");
    if (src->values.size() != dst.values.size())
      LOCKSTEP_THROW(InvalidArgument, "optimizer state: '", dst.name, "' has ", src->values.size(),
                     " values, expected ", dst.values.size());
    std::memcpy(dst.values.data(), src->values.data(), dst.values.size_bytes());
  }
}

Sgd::Sgd(Model& model, const SgdOptions& opt) : Optimizer(model, opt.lr), opt_(opt) {
  if (opt.momentum < 0.0f || opt.weight_decay < 0.0f || (opt.nesterov && opt.momentum <= 0.0f))
    LOCKSTEP_THROW(InvalidArgument, "Sgd: momentum and weight_decay must be >= 0 and Nesterov needs momentum > 0");
  if (opt.momentum > 0.0f) buf_ = make_state(buf_mem_);
}

bool Sgd::step() {
  for (Parameter* p : model().parameters()) {
    if (opt_.momentum == 0.0f) {
      kernels::sgd_plain(p->value_data(), p->grad_data(), p->numel(), lr_, opt_.weight_decay);
    } else {
      kernels::sgd_momentum(p->value_data(), p->grad_data(), buf_.data() + p->value_offset(), p->numel(), lr_,
                            opt_.momentum, opt_.weight_decay, opt_.nesterov);
    }
  }
  step_[0] += 1.0f;
  return true;
}

std::vector<NamedSpan> Sgd::state() {
  std::vector<NamedSpan> out{{"step", std::span<float>(step_, 1)}};
  if (opt_.momentum > 0.0f) add_per_param(out, buf_, "momentum_buffer");
  return out;
}

AdamW::AdamW(Model& model, const AdamWOptions& opt) : Optimizer(model, opt.lr), opt_(opt) {
  if (!(opt.beta1 >= 0.0f && opt.beta1 < 1.0f && opt.beta2 >= 0.0f && opt.beta2 < 1.0f && opt.eps > 0.0f))
    LOCKSTEP_THROW(InvalidArgument, "AdamW: need 0 <= beta1, beta2 < 1 and eps > 0");
  m_ = make_state(m_mem_);
  v_ = make_state(v_mem_);
}

bool AdamW::step() {
  step_[0] += 1.0f;
  const double t = step_[0];
  const float bc1 = float(1.0 - std::pow(double(opt_.beta1), t));
  const float bc2_sqrt = float(std::sqrt(1.0 - std::pow(double(opt_.beta2), t)));
  const float step_size = lr_ / bc1, b1 = opt_.beta1, b2 = opt_.beta2;
  const float decay = 1.0f - lr_ * opt_.weight_decay;
  for (Parameter* p : model().parameters())
    kernels::adamw(p->value_data(), p->grad_data(), m_.data() + p->value_offset(), v_.data() + p->value_offset(),
                   p->numel(), b1, b2, opt_.eps, step_size, bc2_sqrt, decay);
  return true;
}

std::vector<NamedSpan> AdamW::state() {
  std::vector<NamedSpan> out{{"step", std::span<float>(step_, 1)}};
  add_per_param(out, m_, "exp_avg");
  add_per_param(out, v_, "exp_avg_sq");
  return out;
}

float clip_grad_norm(Model& model, float max_norm) {
  if (!(max_norm > 0.0f)) LOCKSTEP_THROW(InvalidArgument, "clip_grad_norm: max_norm must be > 0, got ", max_norm);
  double sq = 0.0;
  for (Parameter* p : model.parameters())
    for (float g : p->grad()) sq += double(g) * double(g);
  const float norm = float(std::sqrt(sq));
  if (norm > max_norm) {
    const float scale = max_norm / (norm + 1e-6f);  // as torch.nn.utils.clip_grad_norm_
    for (float& g : model.flat_grads()) g *= scale;
  }
  return norm;
}

float linear_scaled_lr(float base_lr, int64_t global_batch, int64_t base_batch) {
  if (global_batch <= 0 || base_batch <= 0)
    LOCKSTEP_THROW(InvalidArgument, "linear_scaled_lr: batch sizes must be positive (global ", global_batch,
                   ", base ", base_batch, ")");
  return float(double(base_lr) * double(global_batch) / double(base_batch));
}

StepLr::StepLr(float lr, int64_t step_size, float gamma) : lr_(lr), step_size_(step_size), gamma_(gamma) {
  if (step_size <= 0) LOCKSTEP_THROW(InvalidArgument, "StepLr: step_size must be positive, got ", step_size);
}
float StepLr::lr(int64_t step) const { return lr_ * float(std::pow(double(gamma_), double(step / step_size_))); }

CosineLr::CosineLr(float lr, int64_t total_steps, float min_lr) : lr_(lr), total_(total_steps), min_lr_(min_lr) {
  if (total_steps <= 0) LOCKSTEP_THROW(InvalidArgument, "CosineLr: total_steps must be positive, got ", total_steps);
}
float CosineLr::lr(int64_t step) const {
  if (step >= total_) return min_lr_;
  const double c = 0.5 * (1.0 + std::cos(M_PI * double(step) / double(total_)));
  return float(double(min_lr_) + (double(lr_) - double(min_lr_)) * c);
}

WarmupLr::WarmupLr(std::unique_ptr<LrSchedule> after, int64_t warmup) : after_(std::move(after)), warmup_(warmup) {
  if (!after_ || warmup < 0) LOCKSTEP_THROW(InvalidArgument, "WarmupLr: need a schedule and warmup >= 0");
}
float WarmupLr::lr(int64_t step) const {
  if (step < warmup_) return after_->lr(0) * float(step + 1) / float(warmup_);
  return after_->lr(step - warmup_);
}

}  // namespace lockstep::nn
