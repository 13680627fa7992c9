#include "lockstep/train/train_state.h"

#include <algorithm>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/ddp/zero_optimizer.h"
#include "lockstep/train/checkpoint.h"

namespace lockstep::train {

namespace {

std::vector<int64_t> dims_of(const nn::Shape& s) { return {s.dims().begin(), s.dims().end()}; }

void copy_into(std::span<float> dst, const SafetensorsData& src, const std::string& name,
               const std::string& origin) {
  const StoredTensor* t = src.find(name);
  if (!t)
    LOCKSTEP_THROW(DataError, origin, ": no tensor '", name,
                   "' (was the checkpoint saved from another model or optimizer?)");
  if (t->dtype != DType::f32 || t->numel() != int64_t(dst.size()))
    LOCKSTEP_THROW(DataError, origin, ": tensor '", name, "' is ", dtype_name(t->dtype), " with ",
                   t->numel(), " elements; the model needs float32 with ", dst.size());
  std::memcpy(dst.data(), t->bytes.data(), t->bytes.size());
}

constexpr const char* kEdited = "; the manifest was edited or damaged: resume from an older checkpoint";

int64_t uint_field(const nlohmann::json& j, const char* key, const std::string& origin, const char* where) {
  if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 0)
    LOCKSTEP_THROW(DataError, origin, ": field '", where, key, "' is missing or not a non-negative integer", kEdited);
  return j[key].get<int64_t>();
}

// The sampler's offset after `step` steps: the stretch of the epoch that began at
// state.sampler_start (the epoch's start, or a resume) advanced one global batch per step.
void check_sampler_offset(const Manifest& m, const data::SamplerState& s, const std::string& origin) {
  const nlohmann::json& st = m.state;
  if (!st.contains("sampler_start") || !st.contains("global_batch")) return;  // older checkpoints
  if (!st["sampler_start"].is_object())
    LOCKSTEP_THROW(DataError, origin, ": field 'state.sampler_start' is not an object", kEdited);
  const int64_t s0 = uint_field(st["sampler_start"], "step", origin, "state.sampler_start.");
  const int64_t o0 = uint_field(st["sampler_start"], "offset", origin, "state.sampler_start.");
  const int64_t gb = uint_field(st, "global_batch", origin, "state.");
  const __int128 full = __int128(o0) + __int128(m.step - s0) * gb;  // no overflow for any int64 step
  const bool ok = m.step >= s0 && gb > 0 &&
                  (s.offset == full || (m.step > s0 && s.offset > full - gb && s.offset < full));
  if (!ok)
    LOCKSTEP_THROW(DataError, origin, ": field 'state.sampler' has offset=", s.offset, " but 'step' ", m.step,
                   " is ", m.step - s0, " steps of 'state.global_batch' ", gb, " after 'state.sampler_start' (step ",
                   s0, ", offset ", o0, "), which leads to offset ", int64_t(std::min<__int128>(full, INT64_MAX)),
                   kEdited);
}

}  // namespace

data::SamplerState resume_sampler_state(const Manifest& m, const std::string& origin, int64_t dataset_size) {
  const nlohmann::json& st = m.state;
  if (!st.contains("sampler") || !st["sampler"].is_string())
    LOCKSTEP_THROW(DataError, origin, ": no sampler position (field 'state.sampler')", kEdited);
  data::SamplerState s;
  try {
    s = data::SamplerState::parse(st["sampler"].get<std::string>());
  } catch (const DataError& e) {
    LOCKSTEP_THROW(DataError, origin, ": field 'state.sampler': ", e.what());
  }
  if (s.dataset_size != dataset_size)
    LOCKSTEP_THROW(DataError, origin, ": field 'state.sampler' records dataset_size=", s.dataset_size,
                   " but the training set has ", dataset_size, " samples; resume with the data the checkpoint "
                   "was saved with, or start a new run without --resume");
  if (m.epoch != s.epoch && m.epoch - 1 != s.epoch)  // - 1: saved after the epoch's end
    LOCKSTEP_THROW(DataError, origin, ": field 'epoch' is ", m.epoch, " but 'state.sampler' is in epoch ",
                   s.epoch, kEdited);
  check_sampler_offset(m, s, origin);
  return s;
}

double effective_lr(const TrainConfig& c, int64_t global_batch) {
  if (c.scaling_rule == "linear") return nn::linear_scaled_lr(float(c.lr), global_batch, c.base_batch);
  return c.lr;
}

bool optimizer_reduces_gradients(const TrainConfig& c) { return c.zero; }

ddp::DdpOptions ddp_options(const TrainConfig& c) {
  ddp::DdpOptions o{.gradient_sync = !optimizer_reduces_gradients(c), .deterministic = true};
  const auto cap = std::max<size_t>(1, size_t(c.bucket_cap_mb * double(1 << 20)));
  o.reducer.buckets.bucket_cap_bytes = cap;
  o.reducer.buckets.first_bucket_bytes = std::min(o.reducer.buckets.first_bucket_bytes, cap);
  return o;
}

std::unique_ptr<nn::Optimizer> make_optimizer(const TrainConfig& c, nn::Model& model, ddp::ParamSource& params,
                                              comm::ProcessGroup& pg, double lr, Millis timeout) {
  if (c.zero)  // SGD only (validate)
    return std::make_unique<ddp::ZeroOptimizer>(
        pg, params,
        ddp::ZeroSgdOptions{.lr = float(lr), .momentum = float(c.momentum), .weight_decay = float(c.weight_decay),
                            .nesterov = c.nesterov},
        timeout);
  if (c.optimizer == "adamw")
    return std::make_unique<nn::AdamW>(model, nn::AdamWOptions{.lr = float(lr), .weight_decay = float(c.weight_decay)});
  if (c.optimizer == "sgd")
    return std::make_unique<nn::Sgd>(model, nn::SgdOptions{.lr = float(lr), .momentum = float(c.momentum),
                                                           .weight_decay = float(c.weight_decay),
                                                           .nesterov = c.nesterov});
  LOCKSTEP_THROW(ConfigError, "optimizer '", c.optimizer, "' is not one of: sgd, adamw");
}

std::unique_ptr<nn::LrSchedule> make_schedule(const TrainConfig& c, double lr, int64_t total_steps) {
  const int64_t after = std::max<int64_t>(1, total_steps - c.warmup_steps);
  std::unique_ptr<nn::LrSchedule> s;
  if (c.schedule == "cosine") s = std::make_unique<nn::CosineLr>(float(lr), after, float(c.min_lr));
  else if (c.schedule == "step") s = std::make_unique<nn::StepLr>(float(lr), c.step_size, float(c.gamma));
  else s = std::make_unique<nn::ConstantLr>(float(lr));
  if (c.warmup_steps > 0) s = std::make_unique<nn::WarmupLr>(std::move(s), c.warmup_steps);
  return s;
}

std::vector<TensorView> model_views(nn::Model& model) {
  std::vector<TensorView> out;
  for (nn::Parameter* p : model.parameters())
    out.push_back(tensor_view<float>(p->name(), std::span<const float>(p->value()), dims_of(p->shape())));
  for (nn::ModuleBuffer* b : model.buffers())
    out.push_back(tensor_view<float>(b->name(), std::span<const float>(b->value()), dims_of(b->shape())));
  return out;
}

std::vector<TensorView> optimizer_views(nn::Optimizer& opt) {
  std::vector<TensorView> out;
  for (const nn::NamedSpan& s : opt.state())
    out.push_back(tensor_view<float>(s.name, std::span<const float>(s.values), {int64_t(s.values.size())}));
  return out;
}

void restore_model(nn::Model& model, const SafetensorsData& weights, const std::string& origin) {
  for (nn::Parameter* p : model.parameters()) copy_into(p->value(), weights, p->name(), origin);
  for (nn::ModuleBuffer* b : model.buffers()) copy_into(b->value(), weights, b->name(), origin);
}

void restore_optimizer(nn::Optimizer& opt, const SafetensorsData& state, const std::string& origin) {
  std::vector<std::vector<float>> values;
  std::vector<nn::NamedConstSpan> spans;
  const auto live = opt.state();
  values.reserve(live.size());
  for (const nn::NamedSpan& s : live) {
    values.emplace_back(s.values.size());
    copy_into(values.back(), state, s.name, origin);
    spans.push_back({s.name, values.back()});
  }
  opt.load_state(spans);
}

}  // namespace lockstep::train
