// Optimizers, gradient clipping and learning-rate schedules.
//
// Optimizers read the model's parameters and gradients through Parameter spans, and keep
// their state in flat buffers laid out like Model::flat_params(). State is exported as
// named float spans ("<param>.momentum_buffer", "<param>.exp_avg", "step") so that a
// checkpoint can save and restore it without knowing the optimizer.
//
//   Sgd opt(model, {.lr = 0.05f, .momentum = 0.9f});
//   CosineLr sched(0.05f, total_steps);
//   for (...) { ...backward...; clip_grad_norm(model, 1.0f); opt.set_lr(sched.lr(step)); opt.step(); }
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lockstep/core/buffer.h"
#include "lockstep/nn/model.h"

namespace lockstep::nn {

struct NamedSpan {
  std::string name;
  std::span<float> values;
};
struct NamedConstSpan {
  std::string name;
  std::span<const float> values;
};

// The one interface the trainer and DDP drive: step, learning rate, state to checkpoint.
// Optimizers over an nn::Model (Sgd, AdamW) and over another view of the parameters (ZeRO's
// ddp::ZeroOptimizer, which shards its state over ranks) both implement it.
class Optimizer {
 public:
  Optimizer(Model& model, float lr);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Applies one update and returns true; false when the optimizer checked the (averaged)
  // gradients itself and declined the step because one was not finite: nothing changed.
  virtual bool step() = 0;
  // True when step() averages the gradients over the ranks itself (ZeRO): whoever drives it
  // leaves them local (DDP with gradient_sync = false) and cannot clip them before step().
  virtual bool reduces_gradients() const { return false; }
  void set_lr(float lr) { lr_ = lr; }
  float lr() const { return lr_; }
  int64_t steps() const { return int64_t(step_[0]); }

  // Spans into the live state (copy out to save). "step" is a 1-element count (exact to 2^24).
  // An optimizer whose state is sharded over ranks exports only what every rank holds.
  virtual std::vector<NamedSpan> state() = 0;
  // Copies saved state in; every name of state() must be present with the same size.
  void load_state(std::span<const NamedConstSpan> saved);

 protected:
  // For an optimizer that does not work on an nn::Model (make_state / add_per_param then throw).
  explicit Optimizer(float lr);
  // A zeroed float buffer with one slot per parameter element (flat_params() layout).
  std::span<float> make_state(AlignedBuffer& buf);
  void add_per_param(std::vector<NamedSpan>& out, std::span<float> flat, const std::string& suffix);
  Model& model() const;
  Model* model_ = nullptr;
  float lr_;
  float step_[1] = {0.0f};
};

struct SgdOptions {
  float lr = 0.01f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;  // L2, added to the gradient (as torch.optim.SGD)
  bool nesterov = false;
};

// torch.optim.SGD semantics (dampening 0): b = mu b + (g + wd p); p -= lr (nesterov ? g + mu b : b).
class Sgd : public Optimizer {
 public:
  Sgd(Model& model, const SgdOptions& opt);
  bool step() override;
  std::vector<NamedSpan> state() override;

 private:
  SgdOptions opt_;
  AlignedBuffer buf_mem_;
  std::span<float> buf_;
};

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 1e-2f;  // decoupled: p *= 1 - lr wd
};

// torch.optim.AdamW semantics, including where eps enters (after the bias correction of v).
class AdamW : public Optimizer {
 public:
  AdamW(Model& model, const AdamWOptions& opt);
  bool step() override;
  std::vector<NamedSpan> state() override;

 private:
  AdamWOptions opt_;
  AlignedBuffer m_mem_, v_mem_;
  std::span<float> m_, v_;
};

// Scales all gradients so that their global L2 norm is at most max_norm; returns the norm
// before clipping (summed in double, parameter order: deterministic).
float clip_grad_norm(Model& model, float max_norm);

// Goyal et al.: lr grows linearly with the global batch size.
float linear_scaled_lr(float base_lr, int64_t global_batch, int64_t base_batch);

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual float lr(int64_t step) const = 0;  // step counts from 0
};

class ConstantLr : public LrSchedule {
 public:
  explicit ConstantLr(float lr) : lr_(lr) {}
  float lr(int64_t) const override { return lr_; }

 private:
  float lr_;
};

// lr * gamma^(step / step_size)
class StepLr : public LrSchedule {
 public:
  StepLr(float lr, int64_t step_size, float gamma);
  float lr(int64_t step) const override;

 private:
  float lr_;
  int64_t step_size_;
  float gamma_;
};

// Cosine from lr down to min_lr over total_steps, then min_lr.
class CosineLr : public LrSchedule {
 public:
  CosineLr(float lr, int64_t total_steps, float min_lr = 0.0f);
  float lr(int64_t step) const override;

 private:
  float lr_;
  int64_t total_;
  float min_lr_;
};

// Linear warm-up over the first `warmup` steps (lr * (step+1)/warmup), then `after`
// evaluated at step - warmup.
class WarmupLr : public LrSchedule {
 public:
  WarmupLr(std::unique_ptr<LrSchedule> after, int64_t warmup);
  float lr(int64_t step) const override;

 private:
  std::unique_ptr<LrSchedule> after_;
  int64_t warmup_;
};

}  // namespace lockstep::nn
