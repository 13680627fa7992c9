#include "lockstep/nn/model.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "lockstep/core/error.h"
#include "lockstep/nn/blas.h"

namespace lockstep::nn {

Model::Model(std::unique_ptr<Module> root, uint64_t seed) : root_(std::move(root)) {
  if (!root_) LOCKSTEP_THROW(InvalidArgument, "Model: the root module is null");
  init_threads_from_env();  // before the first GEMM: OpenBLAS would otherwise use every core
  collect(*root_, "");
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i]->index_ = i;
    num_params_ += params_[i]->numel();
  }
  // One allocation per kind; +1 keeps data() valid for parameter-free models.
  values_ = AlignedBuffer(size_t(num_params_ + 1) * sizeof(float));
  grads_ = AlignedBuffer(size_t(num_params_ + 1) * sizeof(float));
  // Reverse order of use: the last registered parameter first.
  size_t off = 0;
  for (auto it = params_.rbegin(); it != params_.rend(); ++it) {
    Parameter& p = **it;
    p.value_offset_ = p.grad_offset_ = off;
    p.value_ = values_.as<float>().data() + off;
    p.grad_ = grads_.as<float>().data() + off;
    off += size_t(p.numel());
  }
  for (ModuleBuffer* b : buffers_) {
    b->offset_ = size_t(num_buffer_elems_);
    num_buffer_elems_ += b->numel();
  }
  bufs_ = AlignedBuffer(size_t(num_buffer_elems_ + 1) * sizeof(float));
  for (ModuleBuffer* b : buffers_) b->value_ = bufs_.as<float>().data() + b->offset_;
  root_->set_hook(&hook_);
  root_->set_needs_input_grad(false);
  init_parameters(seed);
  zero_grad();
}

void Model::collect(Module& m, const std::string& prefix) {
  for (auto& p : m.own_parameters()) {
    p->name_ = prefix + p->name_;
    params_.push_back(p.get());
  }
  for (auto& b : m.own_buffers()) {
    b->name_ = prefix + b->name_;
    buffers_.push_back(b.get());
  }
  m.for_each_child([&](const std::string& name, Module& child) { collect(child, prefix + name + "."); });
}

Parameter& Model::parameter(const std::string& name) {
  for (Parameter* p : params_)
    if (p->name() == name) return *p;
  std::string names;
  for (Parameter* p : params_) names += (names.empty() ? "" : ", ") + p->name();
  LOCKSTEP_THROW(InvalidArgument, "Model::parameter: no parameter named '", name, "'; known: ", names);
}

void Model::zero_grad() {
  if (num_params_ > 0) std::memset(grad_base(), 0, size_t(num_params_) * sizeof(float));
}

void Model::set_grad_order(std::span<const size_t> order) {
  std::vector<char> seen(params_.size(), 0);
  if (order.size() != params_.size())
    LOCKSTEP_THROW(InvalidArgument, "Model::set_grad_order: got ", order.size(), " indices for ",
                   params_.size(), " parameters");
  for (size_t i : order) {
    if (i >= params_.size() || seen[i])
      LOCKSTEP_THROW(InvalidArgument, "Model::set_grad_order: index ", i, " is out of range or repeated");
    seen[i] = 1;
  }
  AlignedBuffer fresh(size_t(num_params_ + 1) * sizeof(float));
  size_t off = 0;
  for (size_t i : order) {
    Parameter& p = *params_[i];
    float* dst = fresh.as<float>().data() + off;
    std::memcpy(dst, p.grad_, size_t(p.numel()) * sizeof(float));
    p.grad_ = dst;
    p.grad_offset_ = off;
    off += size_t(p.numel());
  }
  if (external_grads_.empty()) {
    grads_ = std::move(fresh);
  } else {  // stay in the storage given to move_grads_to
    std::memcpy(external_grads_.data(), fresh.data(), size_t(num_params_) * sizeof(float));
    point_grads_at(external_grads_.data());
  }
}

void Model::point_grads_at(float* base) {
  for (Parameter* p : params_) p->grad_ = base + p->grad_offset_;
}

void Model::move_grads_to(std::span<float> storage) {
  if (!storage.empty() && storage.size() < size_t(num_params_))
    LOCKSTEP_THROW(InvalidArgument, "Model::move_grads_to: ", storage.size(), " floats for ",
                   num_params_, " gradients");
  float* to = storage.empty() ? grads_.as<float>().data() : storage.data();
  if (to != grad_base()) std::memcpy(to, grad_base(), size_t(num_params_) * sizeof(float));
  external_grads_ = storage;
  point_grads_at(to);
}

void Model::init_parameters(uint64_t seed) {
  // One stream per parameter: adding a layer at the end does not change earlier weights.
  for (Parameter* p : params_) {
    Rng rng(seed, p->index());
    apply_init(p->init(), p->value(), rng);
  }
  for (ModuleBuffer* b : buffers_) std::fill(b->value().begin(), b->value().end(), b->initial_value());
}

std::string Model::summary() {
  std::ostringstream os;
  os << root_->describe() << "\n";
  for (Parameter* p : params_)
    os << "  [" << p->index() << "] " << p->name() << " " << p->shape().str() << " (" << p->numel()
       << ") grad@" << p->grad_offset() << "\n";
  for (ModuleBuffer* b : buffers_) os << "  buffer " << b->name() << " " << b->shape().str() << "\n";
  os << "  total parameters: " << num_params_;
  return os.str();
}

}  // namespace lockstep::nn
