// lockstep::torch: ModuleParams (module_params.h) and DistributedDataParallel (ddp.h), in one
// translation unit because LibTorch's headers are slow to compile.
#include "lockstep/torch/ddp.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include <torch/types.h>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"
#include "lockstep/ddp/comm_hook.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/torch/compat.h"

namespace lockstep::torch {
namespace {

std::optional<DType> dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::f32;
    case at::kDouble:
      return DType::f64;
    case at::kHalf:
      return DType::f16;
    case at::kBFloat16:
      return DType::bf16;
    case at::kInt:
      return DType::i32;
    case at::kLong:
      return DType::i64;
    case at::kByte:
    case at::kBool:
      return DType::u8;
    default:
      return std::nullopt;
  }
}

ddp::TensorInfo info_of(const std::string& kind, const std::string& name, const at::Tensor& t) {
  const auto dt = dtype_of(t.scalar_type());
  if (!dt || !t.device().is_cpu() || !t.is_contiguous())
    LOCKSTEP_THROW(
        InvalidArgument, "lockstep::torch::DistributedDataParallel: ", kind, " '", name, "' is ",
        std::string(c10::toString(t.scalar_type())), " on ", t.device().str(),
        t.is_contiguous() ? "" : ", not contiguous",
        "; lockstep::torch supports contiguous CPU tensors only today (float32 parameters). "
        "Move the module to the CPU (module->to(torch::kCPU)) before wrapping it.");
  const auto sizes = t.sizes();
  return {name, std::vector<int64_t>(sizes.begin(), sizes.end()), *dt};
}

}  // namespace

// --- ModuleParams -----------------------------------------------------------------------

ModuleParams::ModuleParams(::torch::nn::Module& module) {
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const at::Tensor& p = item.value();
    if (!p.requires_grad()) continue;  // frozen: not trained, not reduced (as Python DDP)
    ddp::TensorInfo info = info_of("parameter", item.key(), p);
    if (info.dtype != DType::f32)
      LOCKSTEP_THROW(InvalidArgument, "lockstep::torch::DistributedDataParallel: parameter '",
                     item.key(), "' is ", dtype_name(info.dtype),
                     "; the reducer's ParamSource seam holds float32 gradients only today "
                     "(f64/f16/bf16 are not supported yet). Convert the module with "
                     "module->to(torch::kFloat32).");
    params_.push_back(p);
    param_info_.push_back(std::move(info));
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    ddp::TensorInfo info = info_of("buffer", item.key(), item.value());
    if (info.dtype == DType::f32) {
      buffers_.push_back(item.value());
      buffer_info_.push_back(std::move(info));
    } else {
      other_buffers_.push_back({std::move(info), item.value()});
    }
  }
  // Laid out in reverse order, as the reducer's first buckets expect (zero copy from step 1).
  offset_.assign(params_.size(), 0);
  size_t total = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    offset_[k] = total;
    total += param_info_[k].numel();
  }
  own_.assign(total, 0.0f);
  storage_ = own_;
  copy_grads_in();  // a gradient the module already holds keeps its values
  point_grads_at(storage_.data());
}

ModuleParams::~ModuleParams() {
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& g = params_[i].mutable_grad();
    if (g.defined() && g.data_ptr() == views_[i].data_ptr()) g = views_[i].clone();
  }
}

std::span<float> ModuleParams::value(size_t i) {
  return {params_[i].data_ptr<float>(), param_info_[i].numel()};
}

std::span<float> ModuleParams::buffer(size_t i) {
  return {buffers_[i].data_ptr<float>(), buffer_info_[i].numel()};
}

void ModuleParams::attach_grad(size_t i) {
  at::Tensor& g = params_[i].mutable_grad();
  const at::Tensor& v = views_[i];
  if (g.defined() && g.data_ptr() == v.data_ptr()) return;
  ::torch::NoGradGuard no_grad;
  if (g.defined())
    v.copy_(g);
  else
    v.zero_();
  g = v;
}

void ModuleParams::copy_grads_in() {
  for (size_t i = 0; i < views_.size(); ++i) {
    const at::Tensor& g = params_[i].grad();
    if (g.defined() && g.data_ptr() != views_[i].data_ptr()) views_[i].copy_(g);
  }
  if (views_.empty())  // construction: copy any gradient the module holds into own_
    for (size_t i = 0; i < params_.size(); ++i) {
      const at::Tensor& g = params_[i].grad();
      if (!g.defined()) continue;
      const at::Tensor c = g.to(at::kFloat).contiguous();
      std::memcpy(own_.data() + offset_[i], c.data_ptr<float>(),
                  param_info_[i].numel() * sizeof(float));
    }
}

void ModuleParams::point_grads_at(float* base) {
  views_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    views_[i] = ::torch::from_blob(base + offset_[i], params_[i].sizes(),
                                   ::torch::TensorOptions().dtype(at::kFloat));
    params_[i].mutable_grad() = views_[i];
  }
}

bool ModuleParams::set_grad_order(std::span<const size_t> order) {
  if (order.size() != params_.size())
    LOCKSTEP_THROW(InvalidArgument, "ModuleParams::set_grad_order: got ", order.size(),
                   " indices for ", params_.size(), " parameters");
  copy_grads_in();
  std::vector<float> fresh(storage_.size());
  std::vector<size_t> offset(params_.size(), SIZE_MAX);
  size_t off = 0;
  for (size_t i : order) {
    if (i >= params_.size() || offset[i] != SIZE_MAX)
      LOCKSTEP_THROW(InvalidArgument, "ModuleParams::set_grad_order: index ", i,
                     " is out of range or repeated");
    const size_t n = param_info_[i].numel();
    std::memcpy(fresh.data() + off, storage_.data() + offset_[i], n * sizeof(float));
    offset[i] = off;
    off += n;
  }
  offset_ = std::move(offset);
  std::memcpy(storage_.data(), fresh.data(), fresh.size() * sizeof(float));  // stays where it is
  point_grads_at(storage_.data());
  return true;
}

bool ModuleParams::move_grads_to(std::span<float> storage) {
  if (!storage.empty() && storage.size() < own_.size())
    LOCKSTEP_THROW(InvalidArgument, "ModuleParams::move_grads_to: ", storage.size(), " floats for ",
                   own_.size(), " gradients");
  copy_grads_in();
  std::span<float> to = storage.empty() ? std::span<float>(own_) : storage.first(own_.size());
  if (to.data() != storage_.data())
    std::memcpy(to.data(), storage_.data(), own_.size() * sizeof(float));
  storage_ = to;
  point_grads_at(storage_.data());
  return true;
}

// --- DistributedDataParallel ------------------------------------------------------------

namespace {
// What every rank must agree on: the parameters and every buffer, float32 or not (the
// reducer's source lists only the float32 ones). Only its descriptions are read.
class Architecture final : public ddp::ParamSource {
 public:
  explicit Architecture(ModuleParams& p) : p_(p) {
    for (size_t i = 0; i < p.num_buffers(); ++i) buffers_.push_back(p.buffer_info(i));
    for (const auto& b : p.other_buffers()) buffers_.push_back(b.info);
  }
  size_t num_params() const override { return p_.num_params(); }
  const ddp::TensorInfo& param_info(size_t i) const override { return p_.param_info(i); }
  std::span<float> value(size_t i) override { return p_.value(i); }
  std::span<float> grad(size_t i) override { return p_.grad(i); }
  size_t num_buffers() const override { return buffers_.size(); }
  const ddp::TensorInfo& buffer_info(size_t i) const override { return buffers_[i]; }

 private:
  ModuleParams& p_;
  std::vector<ddp::TensorInfo> buffers_;
};

ddp::ReducerOptions reducer_options(const ddp::DdpOptions& opt) {
  ddp::ReducerOptions r = opt.reducer;
  r.timeout = opt.timeout;
  if (opt.deterministic) r.rebuild_buckets = false;
  return r;
}
}  // namespace

DistributedDataParallel::DistributedDataParallel(::torch::nn::Module& module,
                                                 comm::ProcessGroup& pg, ddp::DdpOptions opt)
    : module_(module),
      pg_(pg),
      opt_(std::move(opt)),
      params_(module),
      timeline_(ddp::Timeline::from_env(pg.rank(), pg.size())),
      reducer_(pg, params_, reducer_options(opt_)) {
  Architecture architecture(params_);
  ddp::verify_same_architecture(pg_, architecture, opt_.timeout);
  if (opt_.shared_gradients && pg_.size() > 1 && pg_.supports(comm::Capability::shared_memory)) {
    size_t n = 0;
    for (size_t i = 0; i < params_.num_params(); ++i) n += params_.param_info(i).numel();
    shared_grads_ = pg_.alloc_shared(std::max<size_t>(n, 1) * sizeof(float));
    params_.move_grads_to({reinterpret_cast<float*>(shared_grads_.get()), n});
    grads_home_.moved = &params_;
    reducer_.rebind();
  }
  {
    ::torch::NoGradGuard no_grad;  // writes into leaf tensors that require grad
    ddp::broadcast_state(pg_, params_, true, true, 0, opt_.timeout);
    broadcast_other_buffers();
  }
  reducer_.set_comm_hook(ddp::make_comm_hook(opt_.comm_hook));
  reducer_.set_timeline(timeline_.get());
  reducer_.set_sync(opt_.gradient_sync);
  hooks_.resize(params_.num_params());
  for (size_t i = 0; i < hooks_.size(); ++i) {
    hooks_[i].accumulator = compat::grad_accumulator(params_.param(i));
    hooks_[i].key = compat::add_post_hook(*hooks_[i].accumulator, [this, i] { on_grad_ready(i); });
  }
  LOCKSTEP_LOG(debug, "lockstep::torch ddp: rank ", pg.rank(), "/", pg.size(), " ",
               params_.num_params(), " parameters in ", reducer_.plan().size(), " buckets, hook ",
               reducer_.comm_hook().name());
}

DistributedDataParallel::~DistributedDataParallel() {
  for (Hook& h : hooks_) compat::remove_post_hook(*h.accumulator, h.key);
}

void DistributedDataParallel::on_grad_ready(size_t i) {
  params_.attach_grad(i);
  if (!end_queued_) {
    end_queued_ = true;
    compat::queue_end_of_backward([this] { end_of_backward(); });
  }
  reducer_.mark_ready(i);
}

void DistributedDataParallel::end_of_backward() {
  end_queued_ = false;
  const bool synchronising = reducer_.sync();
  ddp::StepResult r =
      reducer_.finalize();  // throws (unused parameter, peer error) out of backward()
  if (synchronising) last_ = std::move(r);
}

void DistributedDataParallel::sync_buffers() {
  if (!opt_.broadcast_buffers || pg_.size() == 1) return;
  ::torch::NoGradGuard no_grad;
  if (params_.num_buffers() > 0) ddp::broadcast_state(pg_, params_, false, true, 0, opt_.timeout);
  broadcast_other_buffers();
}

void DistributedDataParallel::broadcast_other_buffers() {
  for (auto& b : params_.other_buffers())
    pg_.broadcast(b.tensor.data_ptr(), b.info.numel(), b.info.dtype, 0).wait(opt_.timeout);
}

bool DistributedDataParallel::step(::torch::optim::Optimizer& optimizer) {
  if (!last_.finite) {
    ++skipped_;
    LOCKSTEP_LOG(warn, "lockstep::torch ddp: skipping step ", steps_, ": averaged gradient of '",
                 last_.nonfinite_param, "' is not finite (all ranks skip it)");
    last_ = {};
    return false;
  }
  optimizer.step();
  ++steps_;
  if (opt_.check_replicas_every > 0 && steps_ % opt_.check_replicas_every == 0)
    ddp::verify_replicas_identical(pg_, params_, steps_, opt_.timeout);
  return true;
}

}  // namespace lockstep::torch
