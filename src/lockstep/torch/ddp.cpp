// lockstep::torch: ModuleParams (module_params.h) and DistributedDataParallel (ddp.h), in one
// translation unit because LibTorch's headers are slow to compile.
#include "lockstep/torch/ddp.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>

#include <torch/types.h>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"
#include "lockstep/ddp/comm_hook.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/torch/compat.h"
#include "lockstep/torch/cuda_event.h"
#include "lockstep/torch/dtype.h"

namespace lockstep::torch {
namespace {

// Parameters and buffers: bool buffers are broadcast as bytes (no reduction runs on them).
std::optional<DType> dtype_of(at::ScalarType t) {
  return t == at::kBool ? std::optional<DType>(DType::u8) : lockstep_dtype(t);
}

// Dtypes the reducer holds gradients of (one dtype per bucket).
bool reducible(DType t) {
  return dtype_is_float(t);
}

// Why tensor `name` cannot be wrapped, or "".
std::string tensor_problem(const char* kind, const std::string& name, const at::Tensor& t,
                           bool trained) {
  const auto dt = dtype_of(t.scalar_type());
  const std::string type = dt ? std::string(dtype_name(*dt)) : c10::toString(t.scalar_type());
  const std::string is = str_cat(kind, " '", name, "' is ", type, " on ", t.device().str());
  if (!dt || (trained && !reducible(*dt)))
    return str_cat(is,
                   "; lockstep::torch reduces float32, float64, float16 and bfloat16 "
                   "parameters. Convert the module (e.g. module->to(torch::kFloat32)) before "
                   "wrapping it.");
  if (!t.device().is_cpu() && !t.device().is_cuda())
    return str_cat(is,
                   "; lockstep::torch takes CPU and CUDA tensors. Move the module with "
                   "module->to(torch::kCPU) or module->to(torch::kCUDA) before wrapping it.");
  if (!t.is_contiguous())
    return str_cat(is, ", not contiguous; make it contiguous before wrapping the module.");
  return "";
}

ddp::TensorInfo info_of(const std::string& name, const at::Tensor& t) {
  const auto sizes = t.sizes();
  return {name, std::vector<int64_t>(sizes.begin(), sizes.end()), *dtype_of(t.scalar_type())};
}

}  // namespace

std::string wrap_problem(::torch::nn::Module& module) {
  const at::Tensor* first = nullptr;
  std::string first_name;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const at::Tensor& p = item.value();
    if (!p.requires_grad()) continue;
    if (!first) {
      first = &p;
      first_name = item.key();
    } else if (p.device() != first->device()) {
      return str_cat("parameter '", item.key(), "' is on ", p.device().str(), " but '", first_name,
                     "' is on ", first->device().str(),
                     ": every parameter must be on one device. Move the whole module "
                     "(module->to(device)) before wrapping it.");
    }
    if (auto m = tensor_problem("parameter", item.key(), p, true); !m.empty()) return m;
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    if (auto m = tensor_problem("buffer", item.key(), item.value(), false); !m.empty()) return m;
  return "";
}

// --- ModuleParams -----------------------------------------------------------------------

namespace {
// The host copy the collectives read of a module off the CPU's tensor (else the tensor).
at::Tensor host_copy(const at::Tensor& t, bool off_cpu) {
  return off_cpu ? at::empty(t.sizes(), t.options().device(at::kCPU)).copy_(t.detach()) : t;
}
}  // namespace

ModuleParams::ModuleParams(::torch::nn::Module& module, bool bucket_view, bool device_buckets) {
  if (auto m = wrap_problem(module); !m.empty())
    LOCKSTEP_THROW(InvalidArgument, "lockstep::torch::ModuleParams: ", m);
  for (const auto& p : module.parameters(/*recurse=*/true))  // trainable: all on one device
    if (p.requires_grad() && !p.device().is_cpu()) device_ = p.device();
  for (const auto& b : module.buffers(/*recurse=*/true))
    if (!b.device().is_cpu()) host_state_ = true;  // collectives read buffers through host copies
  host_state_ = host_state_ || !device_.is_cpu();
  staged_ = !bucket_view || (!device_.is_cpu() && !device_buckets);
  if (staged_) device_ = c10::Device(c10::kCPU);  // the buckets are host memory
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const at::Tensor& p = item.value();
    if (!p.requires_grad()) continue;  // frozen: not trained, not reduced (as Python DDP)
    ddp::TensorInfo info = info_of(item.key(), p);
    params_.push_back(p);
    host_params_.push_back(host_copy(p, host_state_));
    param_info_.push_back(std::move(info));
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    ddp::TensorInfo info = info_of(item.key(), item.value());
    if (info.dtype == DType::f32) {
      buffers_.push_back(item.value());
      host_buffers_.push_back(host_copy(item.value(), host_state_));
      buffer_info_.push_back(std::move(info));
    } else {
      other_buffers_.push_back(
          {std::move(info), item.value(), host_copy(item.value(), host_state_)});
    }
  }
  // Laid out in reverse order, as the reducer's first buckets expect (zero copy from step 1).
  std::vector<size_t> reverse(params_.size());
  for (size_t k = 0; k < reverse.size(); ++k) reverse[k] = reverse.size() - 1 - k;
  // Room for any layout: alignment pads each slice by less than 8 bytes. (Both allocators
  // align for every element type.)
  own_ = at::zeros({int64_t(lay_out(reverse) + 8 * params_.size())},
                   at::TensorOptions().dtype(at::kByte).device(device_));
  storage_ = {static_cast<std::byte*>(own_.data_ptr()), size_t(own_.nbytes())};
  make_views(storage_.data());
  copy_grads_in();  // a gradient the module already holds keeps its values
  install_views();
}

ModuleParams::~ModuleParams() {
  if (staged_) return;  // the gradients are the module's own tensors
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& g = params_[i].mutable_grad();
    if (g.defined() && g.data_ptr() == views_[i].data_ptr()) g = views_[i].clone();
  }
}

size_t ModuleParams::lay_out(std::span<const size_t> order) {
  if (order.size() != params_.size())
    LOCKSTEP_THROW(InvalidArgument, "ModuleParams::set_grad_order: got ", order.size(),
                   " indices for ", params_.size(), " parameters");
  std::vector<size_t> offset(params_.size(), SIZE_MAX);
  size_t off = 0;
  for (size_t i : order) {
    if (i >= params_.size() || offset[i] != SIZE_MAX)
      LOCKSTEP_THROW(InvalidArgument, "ModuleParams::set_grad_order: index ", i,
                     " is out of range or repeated");
    const size_t elem = dtype_size(param_info_[i].dtype);
    off = (off + elem - 1) / elem * elem;  // neighbours of one dtype stay adjacent
    offset[i] = off;
    off += param_info_[i].numel() * elem;
  }
  offset_ = std::move(offset);
  return off;
}

namespace {
std::span<float> as_floats(const ddp::TensorInfo& info, void* data) {
  if (info.dtype != DType::f32)
    LOCKSTEP_THROW(InvalidArgument, "ModuleParams: parameter '", info.name, "' is ",
                   dtype_name(info.dtype), ", not float32; use value_bytes()/grad_bytes()");
  return {static_cast<float*>(data), info.numel()};
}
}  // namespace

std::span<float> ModuleParams::value(size_t i) {
  return as_floats(param_info_[i], host_params_[i].data_ptr());
}

std::span<float> ModuleParams::grad(size_t i) {
  return as_floats(param_info_[i], storage_.data() + offset_[i]);
}

std::span<std::byte> ModuleParams::value_bytes(size_t i) {
  return {static_cast<std::byte*>(host_params_[i].data_ptr()), size_t(host_params_[i].nbytes())};
}

std::span<float> ModuleParams::buffer(size_t i) {
  return {host_buffers_[i].data_ptr<float>(), buffer_info_[i].numel()};
}

void ModuleParams::attach_grad(size_t i) {
  at::Tensor& g = params_[i].mutable_grad();
  const at::Tensor& v = views_[i];
  if (staged_) {
    ::torch::NoGradGuard no_grad;
    if (g.defined())
      v.copy_(g);  // from the device: waits for the stream that computed g
    else
      v.zero_();
    return;
  }
  if (g.defined() && g.data_ptr() == v.data_ptr()) return;
  ::torch::NoGradGuard no_grad;
  if (g.defined())
    v.copy_(g);
  else
    v.zero_();
  g = v;
}

void ModuleParams::copy_grads_in() {
  // Staged: the slices are what counts (a re-layout runs after the reduction, before
  // return_grads(): .grad() still holds the local gradient then).
  if (staged_) return;
  ::torch::NoGradGuard no_grad;
  for (size_t i = 0; i < views_.size(); ++i) {
    const at::Tensor& g = params_[i].grad();
    if (g.defined() && g.data_ptr() != views_[i].data_ptr()) views_[i].copy_(g);
  }
}

at::Tensor ModuleParams::bytes_at(std::byte* p, size_t n) const {
  return ::torch::from_blob(p, {int64_t(n)}, at::TensorOptions().dtype(at::kByte).device(device_));
}

void ModuleParams::make_views(std::byte* base) {
  views_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    views_[i] =
        ::torch::from_blob(base + offset_[i], params_[i].sizes(),
                           at::TensorOptions().dtype(params_[i].scalar_type()).device(device_));
}

void ModuleParams::install_views() {
  if (staged_) return;
  for (size_t i = 0; i < params_.size(); ++i) params_[i].mutable_grad() = views_[i];
}

void ModuleParams::return_grads() {
  if (!staged_) return;
  ::torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& g = params_[i].mutable_grad();
    if (!g.defined()) g = at::empty_like(params_[i], at::MemoryFormat::Contiguous);
    g.copy_(views_[i]);
  }
}

void ModuleParams::copy_state(bool to_host, bool values, bool buffers) {
  if (!host_state_) return;
  ::torch::NoGradGuard no_grad;
  auto copy = [to_host](const at::Tensor& t, const at::Tensor& host) {
    if (to_host)
      host.copy_(t);
    else
      t.copy_(host);
  };
  for (size_t i = 0; values && i < params_.size(); ++i) copy(params_[i], host_params_[i]);
  for (size_t i = 0; buffers && i < buffers_.size(); ++i) copy(buffers_[i], host_buffers_[i]);
  for (auto& b : other_buffers_)
    if (buffers) copy(b.tensor, b.host);
}

bool ModuleParams::set_grad_order(std::span<const size_t> order) {
  copy_grads_in();
  ::torch::NoGradGuard no_grad;
  const std::vector<size_t> old = offset_;
  // Torch copies, so that gradients on a GPU move on it (on the current stream).
  const at::Tensor before = bytes_at(storage_.data(), storage_.size()).clone();
  // The total can only change by alignment padding; storage_ keeps its size and place.
  if (const size_t need = lay_out(order); need > storage_.size())
    LOCKSTEP_THROW(InternalError, "ModuleParams::set_grad_order: the new layout needs ", need,
                   " bytes, more than the ", storage_.size(), " there are");
  for (size_t i = 0; i < params_.size(); ++i) {
    const size_t n = grad_bytes(i).size();
    bytes_at(storage_.data() + offset_[i], n).copy_(before.narrow(0, int64_t(old[i]), int64_t(n)));
  }
  make_views(storage_.data());
  install_views();
  return true;
}

bool ModuleParams::move_grads_to(std::span<float> storage) {
  if (!grads_on_host()) return false;  // shared memory is host memory
  const size_t own = size_t(own_.nbytes());
  const auto to_bytes = std::as_writable_bytes(storage);
  if (!storage.empty() && to_bytes.size() < own)
    LOCKSTEP_THROW(InvalidArgument, "ModuleParams::move_grads_to: ", to_bytes.size(), " bytes for ",
                   own, " bytes of gradients");
  copy_grads_in();
  std::span<std::byte> to =
      storage.empty() ? std::span<std::byte>(static_cast<std::byte*>(own_.data_ptr()), own)
                      : to_bytes.first(own);
  if (to.data() != storage_.data()) std::memcpy(to.data(), storage_.data(), own);
  storage_ = to;
  make_views(storage_.data());
  install_views();
  return true;
}

bool ModuleParams::nonfinite(std::span<const std::byte> bytes, DType t) const {
  if (grads_on_host()) return ParamSource::nonfinite(bytes, t);
  ::torch::NoGradGuard no_grad;
  const auto n = int64_t(bytes.size() / dtype_size(t));
  const at::Tensor x =
      ::torch::from_blob(const_cast<std::byte*>(bytes.data()), {n},
                         at::TensorOptions().dtype(*torch_dtype(t)).device(device_));
  return !at::isfinite(x).all().item<bool>();  // waits for the current stream only
}

// --- DistributedDataParallel ------------------------------------------------------------

std::string device_problem(c10::Device module_device, const std::string& backend,
                           int group_device) {
  if (!module_device.is_cuda() || module_device.index() == group_device) return "";
  return str_cat("the module is on ", module_device.str(), " but this rank's ", backend,
                 " group reads the memory of cuda:", group_device,
                 " in place (LOCKSTEP_NCCL_DEVICE, else LOCAL_RANK modulo the device count). "
                 "Move the module to cuda:",
                 group_device, ", or set LOCKSTEP_NCCL_DEVICE=", int(module_device.index()),
                 " before the group is created.");
}

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

// Every rank learns whether some rank cannot wrap its module, and why (the first such rank's
// reason), so that all of them throw here instead of the others waiting in a collective.
void agree_wrappable(comm::ProcessGroup& pg, const std::string& mine, Millis timeout) {
  const char* what = "lockstep::torch::DistributedDataParallel: ";
  if (pg.size() == 1) {
    if (!mine.empty()) LOCKSTEP_THROW(InvalidArgument, what, mine);
    return;
  }
  int64_t len = int64_t(mine.size());
  std::vector<int64_t> lens(size_t(pg.size()));
  pg.allgather(&len, lens.data(), 1, DType::i64).wait(timeout);
  const auto bad = std::find_if(lens.begin(), lens.end(), [](int64_t n) { return n > 0; });
  if (bad == lens.end()) return;
  const int root = int(bad - lens.begin());
  const auto others = std::count_if(bad + 1, lens.end(), [](int64_t n) { return n > 0; });
  std::string text = pg.rank() == root ? mine : std::string(size_t(*bad), '\0');
  pg.broadcast(text.data(), text.size(), DType::u8, root).wait(timeout);
  LOCKSTEP_THROW(InvalidArgument, what, "rank ", root, " cannot wrap its module: ", text,
                 others ? str_cat(" (and ", others, " more rank(s) cannot either)") : "",
                 " [seen from rank ", pg.rank(), "; every rank stops here]");
}

// Whether gradients of a module on a GPU stay there, the buckets read in place: the group
// takes device memory (nccl) and the hook computes nothing on the host.
bool device_buckets(const comm::ProcessGroup& pg, const ddp::DdpOptions& opt) {
  return pg.supports(comm::Capability::device_memory) &&
         !ddp::make_comm_hook(opt.comm_hook)->host_memory_only();
}

ddp::ReducerOptions reducer_options(const ddp::DdpOptions& opt) {
  ddp::ReducerOptions r = opt.reducer;
  r.timeout = opt.timeout;
  if (opt.deterministic) r.rebuild_buckets = false;
  return r;
}
}  // namespace

DistributedDataParallel::DistributedDataParallel(::torch::nn::Module& module,
                                                 comm::ProcessGroup& pg, ddp::DdpOptions opt,
                                                 TorchOptions torch_opt)
    : module_(module),
      pg_(pg),
      opt_(std::move(opt)),
      device_buckets_(device_buckets(pg, opt_)),
      params_(checked(module, pg, opt_.timeout, device_buckets_), torch_opt.gradient_as_bucket_view,
              device_buckets_),
      timeline_(ddp::Timeline::from_env(pg.rank(), pg.size())),
      reducer_(pg, params_, reducer_options(opt_)) {
  Architecture architecture(params_);
  ddp::verify_same_architecture(pg_, architecture, opt_.timeout);
  if (opt_.shared_gradients && pg_.size() > 1 && pg_.supports(comm::Capability::shared_memory)) {
    const size_t n = (params_.grad_storage_bytes() + sizeof(float) - 1) / sizeof(float);
    shared_grads_ = pg_.alloc_shared(std::max<size_t>(n, 1) * sizeof(float));
    params_.move_grads_to({reinterpret_cast<float*>(shared_grads_.get()), n});
    grads_home_.moved = &params_;
    reducer_.rebind();
  }
  {
    ::torch::NoGradGuard no_grad;  // writes into leaf tensors that require grad
    ddp::broadcast_state(pg_, params_, true, true, 0, opt_.timeout);
    broadcast_other_buffers();
    if (pg_.rank() != 0) params_.state_from_host(true, true);  // off the CPU: rank 0's, received
  }
  reducer_.set_comm_hook(ddp::make_comm_hook(opt_.comm_hook));
  reducer_.set_timeline(timeline_.get());
  reducer_.set_sync(opt_.gradient_sync);
  wrapped_data_.resize(params_.num_params());
  for (size_t i = 0; i < wrapped_data_.size(); ++i) wrapped_data_[i] = params_.param(i).data_ptr();
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

::torch::nn::Module& DistributedDataParallel::checked(::torch::nn::Module& module,
                                                      comm::ProcessGroup& pg, Millis timeout,
                                                      bool device_buckets) {
  std::string problem = wrap_problem(module);
  if (problem.empty() && device_buckets)
    for (const auto& p : module.parameters(/*recurse=*/true))
      if (p.requires_grad()) {  // all on one device (wrap_problem)
        problem = device_problem(p.device(), pg.backend_name(), pg.cuda_device());
        break;
      }
  agree_wrappable(pg, problem, timeout);
  return module;
}

void DistributedDataParallel::check_unchanged(const char* when) {
  size_t n = 0, k = 0;  // trainable parameters now; the first that differs
  bool same = true;
  for (const at::Tensor& p : module_.parameters(/*recurse=*/true)) {
    if (!p.requires_grad()) continue;
    if (same && (n == wrapped_data_.size() ||
                 p.unsafeGetTensorImpl() != params_.param(n).unsafeGetTensorImpl() ||
                 p.data_ptr() != wrapped_data_[n])) {
      same = false;
      k = n;
    }
    ++n;
  }
  if (same && n == wrapped_data_.size()) return;
  if (same) k = n;  // one was removed or frozen at the end
  LOCKSTEP_THROW(InvalidArgument, "lockstep::torch::DistributedDataParallel: rank ", pg_.rank(),
                 ", at ", when, " after step ", steps_,
                 ": the module's parameters changed after it was wrapped: ", change_at(k),
                 ". DDP reduces the parameters it wrapped only (this rank would train others "
                 "than its peers, or wait for them forever). Register, move and cast every "
                 "parameter before constructing DistributedDataParallel, or construct a new one "
                 "after the change, on every rank.");
}

// What differs at or after the k-th trainable parameter (check_unchanged found it): names
// added or gone first, then the tensor or its storage.
std::string DistributedDataParallel::change_at(size_t k) {
  std::vector<std::pair<std::string, at::Tensor>> now;
  for (const auto& item : module_.named_parameters(/*recurse=*/true))
    if (item.value().requires_grad()) now.emplace_back(item.key(), item.value());
  std::set<std::string> was, is;
  for (size_t i = 0; i < params_.num_params(); ++i) was.insert(params_.param_info(i).name);
  for (const auto& [name, t] : now) {
    is.insert(name);
    if (!was.count(name)) return str_cat("parameter '", name, "' was added");
  }
  for (size_t i = 0; i < params_.num_params(); ++i)
    if (!is.count(params_.param_info(i).name))
      return str_cat("parameter '", params_.param_info(i).name,
                     "' was removed or frozen (requires_grad false)");
  const std::string& name = params_.param_info(k).name;
  if (now[k].first != name)
    return str_cat("parameter '", now[k].first, "' is where '", name, "' was (reordered)");
  if (now[k].second.unsafeGetTensorImpl() != params_.param(k).unsafeGetTensorImpl())
    return str_cat("parameter '", name, "' was re-registered (it is another tensor now)");
  return str_cat("parameter '", name,
                 "' has new storage (module->to(), set_data() or a cast after wrapping)");
}

void DistributedDataParallel::on_grad_ready(size_t i) {
  if (!end_queued_) {
    check_unchanged("backward");  // the first hook of this backward
    end_queued_ = true;
    compat::queue_end_of_backward([this] { end_of_backward(); });
    // static_graph: the parameters found unused are marked ready with this first hook.
    if (pg_.size() > 1 && reducer_.sync())
      for (size_t j : reducer_.static_unused()) params_.attach_grad(j);
  }
  if (!params_.staged() || reducer_.sync()) params_.attach_grad(i);
  std::optional<comm::DeviceOrder> after;  // device buckets: after the gradient's stream
  order_after_current_stream(after);
  reducer_.mark_ready(i);
}

void DistributedDataParallel::order_after_current_stream(
    std::optional<comm::DeviceOrder>& after) const {
  if (!params_.grads_on_host() && pg_.size() > 1 && reducer_.sync())
    after.emplace(record_stream_event(params_.grads_device()));
}

void DistributedDataParallel::end_of_backward() {
  end_queued_ = false;
  const bool synchronising = reducer_.sync();
  // A parameter without a gradient in this backward is reduced with what its .grad() holds,
  // zeros when it has none (as PyTorch's DDP): its slice still holds the last step's average
  // when .grad() was set to none or (staged) was never copied in.
  if (synchronising && pg_.size() > 1)
    for (size_t i = 0; i < params_.num_params(); ++i)
      if (!reducer_.marked(i)) params_.attach_grad(i);
  std::optional<comm::DeviceOrder> after;  // the last buckets launch here
  order_after_current_stream(after);
  ddp::StepResult r =
      reducer_.finalize();  // throws (unused parameter, peer error) out of backward()
  if (synchronising) {
    params_.return_grads();  // staged: the averaged buckets back into .grad()
    last_ = std::move(r);
  }
}

void DistributedDataParallel::sync_buffers() {
  if (!opt_.broadcast_buffers || pg_.size() == 1) return;
  ::torch::NoGradGuard no_grad;
  // Off the CPU: only the root's host copies are read, only the others' are overwritten.
  if (pg_.rank() == 0) params_.state_to_host(false, true);
  if (params_.num_buffers() > 0) ddp::broadcast_state(pg_, params_, false, true, 0, opt_.timeout);
  broadcast_other_buffers();
  if (pg_.rank() != 0) params_.state_from_host(false, true);
}

void DistributedDataParallel::broadcast_other_buffers() {
  for (auto& b : params_.other_buffers())
    pg_.broadcast(b.host.data_ptr(), b.info.numel(), b.info.dtype, 0).wait(opt_.timeout);
}

bool DistributedDataParallel::step(::torch::optim::Optimizer& optimizer) {
  if (!last_.finite) {
    ++skipped_;
    LOCKSTEP_LOG(warn, "lockstep::torch ddp: skipping step ", steps_, ": averaged gradient of '",
                 last_.nonfinite_param, "' is not finite (all ranks skip it)");
    last_ = {};
    return false;
  }
  check_unchanged("step");
  optimizer.step();
  ++steps_;
  if (opt_.check_replicas_every > 0 && steps_ % opt_.check_replicas_every == 0)
    verify_replicas(steps_);
  return true;
}

void DistributedDataParallel::verify_replicas(int64_t step) {
  params_.state_to_host(true, false);
  ddp::verify_replicas_identical(pg_, params_, step, opt_.timeout);
}

}  // namespace lockstep::torch
