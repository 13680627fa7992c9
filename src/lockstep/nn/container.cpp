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
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) cur = &(*it)->backward(*cur);
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

void Sequential::set_needs_input_grad(bool needs) {
  // Only the first child sees the container's input; every later one feeds a predecessor.
  needs_input_grad_ = needs;
  for (size_t i = 0; i < children_.size(); ++i) children_[i]->set_needs_input_grad(i == 0 ? needs : true);
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
