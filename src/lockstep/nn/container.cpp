#include "lockstep/core/error.h"
#include "lockstep/nn/layers.h"

namespace lockstep::nn {

Sequential& Sequential::add(std::unique_ptr<Module> m) {
  if (!m) LOCKSTEP_THROW(InvalidArgument, "Sequential::add: module ", children_.size(), " is null");
  children_.push_back(std::move(m));
  return *this;
}

const Tensor& Sequential::forward(const Tensor& x) {
  if (children_.empty()) LOCKSTEP_THROW(InvalidArgument, "Sequential::forward: the container is empty");
  const Tensor* cur = &x;
  for (auto& m : children_) cur = &m->forward(*cur);
  return *cur;
}

const Tensor& Sequential::backward(const Tensor& dy) {
  const Tensor* cur = &dy;
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
    cur = &(*it)->backward(*cur);
    // No input gradient here means none is needed before it either: the children in front
    // have no parameters (set_needs_input_grad), so their backward is skipped.
    if (!(*it)->needs_input_grad()) break;
  }
  return *cur;
}

std::string Sequential::describe() const {
  std::string s = "Sequential(";
  for (size_t i = 0; i < children_.size(); ++i) s += (i ? ", " : "") + children_[i]->describe();
  return s + ")";
}

void Sequential::for_each_child(const std::function<void(const std::string&, Module&)>& fn) {
  for (size_t i = 0; i < children_.size(); ++i) fn(std::to_string(i), *children_[i]);
}

namespace {
bool has_parameters(Module& m) {
  if (!m.own_parameters().empty()) return true;
  bool any = false;
  m.for_each_child([&](const std::string&, Module& c) { any = any || has_parameters(c); });
  return any;
}
}  // namespace

void Sequential::set_needs_input_grad(bool needs) {
  // A child's input gradient is needed when the container's is, or when some earlier child
  // has parameters to receive it (a Flatten in front of the first Linear needs none, and
  // then neither does that Linear: its dx would be one more GEMM thrown away).
  needs_input_grad_ = needs;
  bool before = needs;
  for (auto& c : children_) {
    c->set_needs_input_grad(before);
    before = before || has_parameters(*c);
  }
}

Residual::Residual(std::unique_ptr<Module> inner) : inner_(std::move(inner)) {
  if (!inner_) LOCKSTEP_THROW(InvalidArgument, "Residual: the inner module is null");
}

const Tensor& Residual::forward(const Tensor& x) {
  const Tensor& f = inner_->forward(x);
  if (!(f.shape() == x.shape()))
    LOCKSTEP_THROW(InvalidArgument, "Residual: inner ", inner_->describe(), " maps ", x.shape().str(), " to ",
                   f.shape().str(), "; shapes must match");
  y_.resize(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) y_[i] = x[i] + f[i];
  return y_;
}

const Tensor& Residual::backward(const Tensor& dy) {
  const Tensor& di = inner_->backward(dy);
  if (!needs_input_grad()) return dx_;
  dx_.resize(dy.shape());
  for (int64_t i = 0; i < dy.numel(); ++i) dx_[i] = dy[i] + di[i];
  return dx_;
}

std::string Residual::describe() const { return "Residual(" + inner_->describe() + ")"; }

void Residual::for_each_child(const std::function<void(const std::string&, Module&)>& fn) { fn("inner", *inner_); }

void Residual::set_needs_input_grad(bool needs) {
  needs_input_grad_ = needs;
  inner_->set_needs_input_grad(needs);
}

}  // namespace lockstep::nn
