// Model: owns a module tree and the flat storage of all its parameters, gradients and
// buffers. This is the object the DDP reducer and the optimizers work on.
//
// Layout: parameters() lists parameters in registration order (the order forward uses
// them), with index() = position in that list. The flat value and gradient buffers hold
// them in REVERSE order of use: the last layer's parameters sit at offset 0, so gradients
// that become final first during backward are contiguous at the front and a bucket is a
// plain span of flat_grads(). set_grad_order() re-lays gradients out in another order
// (e.g. the order they were observed to become ready).
//
//   Model model(make_sequential(...), /*seed=*/42);
//   model.on_grad_ready([&](size_t i) { reducer.mark_ready(i); });
//   model.zero_grad();
//   const Tensor& logits = model.forward(x);
//   ... loss ... model.backward(dlogits);   // calls the hook once per parameter
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lockstep/core/buffer.h"
#include "lockstep/nn/module.h"

namespace lockstep::nn {

class Model {
 public:
  Model(std::unique_ptr<Module> root, uint64_t seed);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Tensor& forward(const Tensor& x) { return root_->forward(x); }
  // The model's input never needs a gradient, so the first layer skips computing dx.
  const Tensor& backward(const Tensor& dy) { return root_->backward(dy); }

  Module& root() { return *root_; }
  std::span<Parameter* const> parameters() const { return params_; }
  std::span<ModuleBuffer* const> buffers() const { return buffers_; }
  Parameter& parameter(const std::string& name);  // throws InvalidArgument listing names

  std::span<float> flat_params() { return values_.as<float>().first(size_t(num_params_)); }
  std::span<float> flat_grads() { return {grad_base(), size_t(num_params_)}; }
  std::span<float> flat_buffers() { return bufs_.as<float>().first(size_t(num_buffer_elems_)); }
  int64_t num_params() const { return num_params_; }

  void zero_grad();
  // Called with Parameter::index() when that gradient is final during backward.
  void on_grad_ready(GradReadyHook hook) { hook_ = std::move(hook); }
  // Re-lays out gradients so that parameters()[order[0]] sits at offset 0, then order[1]...
  // `order` must be a permutation of all parameter indices. Gradient contents are kept.
  void set_grad_order(std::span<const size_t> order);
  // Moves the gradients (contents and layout kept) into `storage` of at least num_params()
  // floats, which the caller keeps alive, e.g. memory shared with other ranks so that their
  // all-reduce needs no copies; later re-layouts stay in it. An empty span moves them back
  // into the model's own buffer (before `storage` goes away).
  void move_grads_to(std::span<float> storage);

  // Redraws every parameter from its Init (stream per parameter) and resets buffers.
  void init_parameters(uint64_t seed);
  void train(bool training = true) { root_->set_training(training); }
  void eval() { root_->set_training(false); }

  // One line per module and parameter: names, shapes, counts.
  std::string summary();

 private:
  void collect(Module& m, const std::string& prefix);

  std::unique_ptr<Module> root_;
  std::vector<Parameter*> params_;
  std::vector<ModuleBuffer*> buffers_;
  AlignedBuffer values_;
  AlignedBuffer grads_;
  std::span<float> external_grads_;  // where the gradients live instead of grads_ (move_grads_to)
  float* grad_base() { return external_grads_.empty() ? grads_.as<float>().data() : external_grads_.data(); }
  void point_grads_at(float* base);
  AlignedBuffer bufs_;
  int64_t num_params_ = 0;
  int64_t num_buffer_elems_ = 0;
  GradReadyHook hook_;
};

}  // namespace lockstep::nn
