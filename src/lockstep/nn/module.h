// Module: a layer with an explicit forward and backward, and the parameters it owns.
//
// A Module declares its parameters (name, shape, init) in its constructor; their storage
// is not its own. Wrapping the root module in a `Model` lays every parameter and gradient
// out in flat buffers owned by the Model and binds the spans. During backward, a module
// calls `grad_ready(p)` as soon as p's gradient is final; the Model forwards that to the
// `on_grad_ready` hook, which is where the DDP reducer plugs in.
//
// forward() returns a reference to the module's own output activation (valid until its
// next forward); backward(dy) accumulates (+=) into parameter gradients and returns dx,
// which it may skip computing when needs_input_grad() is false (the first layer).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lockstep/nn/init.h"
#include "lockstep/nn/tensor.h"

namespace lockstep::nn {

class Model;

// A learnable tensor: value and gradient live in the Model's flat buffers.
class Parameter {
 public:
  Parameter(std::string name, const Shape& shape, const Init& init)
      : name_(std::move(name)), shape_(shape), init_(init) {}

  const std::string& name() const { return name_; }  // full dotted name once bound ("3.weight")
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_.numel(); }
  const Init& init() const { return init_; }
  size_t index() const { return index_; }  // position in Model::parameters()
  size_t value_offset() const { return value_offset_; }  // into Model::flat_params()
  size_t grad_offset() const { return grad_offset_; }    // into Model::flat_grads()
  bool bound() const { return value_ != nullptr; }

  std::span<float> value() { return {value_, size_t(numel())}; }
  std::span<const float> value() const { return {value_, size_t(numel())}; }
  std::span<float> grad() { return {grad_, size_t(numel())}; }
  std::span<const float> grad() const { return {grad_, size_t(numel())}; }
  float* value_data() { return value_; }
  float* grad_data() { return grad_; }

 private:
  friend class Model;
  std::string name_;
  Shape shape_;
  Init init_;
  size_t index_ = 0;
  size_t value_offset_ = 0;
  size_t grad_offset_ = 0;
  float* value_ = nullptr;
  float* grad_ = nullptr;
};

// Non-learnable state that replicas must agree on (BatchNorm running statistics).
class ModuleBuffer {
 public:
  ModuleBuffer(std::string name, const Shape& shape, float fill)
      : name_(std::move(name)), shape_(shape), fill_(fill) {}
  const std::string& name() const { return name_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_.numel(); }
  float initial_value() const { return fill_; }
  size_t offset() const { return offset_; }  // into Model::flat_buffers()
  std::span<float> value() { return {value_, size_t(numel())}; }
  std::span<const float> value() const { return {value_, size_t(numel())}; }

 private:
  friend class Model;
  std::string name_;
  Shape shape_;
  float fill_;
  size_t offset_ = 0;
  float* value_ = nullptr;
};

using GradReadyHook = std::function<void(size_t param_index)>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual const Tensor& forward(const Tensor& x) = 0;
  virtual const Tensor& backward(const Tensor& dy) = 0;
  // A one-line description, e.g. "Linear(784, 512)".
  virtual std::string describe() const = 0;
  // Containers list their children (name, module) in the order forward uses them.
  virtual void for_each_child(const std::function<void(const std::string&, Module&)>& fn) {}

  virtual void set_training(bool training);  // recursive
  bool training() const { return training_; }
  // Containers pass this on to the child that sees their input.
  virtual void set_needs_input_grad(bool needs) { needs_input_grad_ = needs; }
  bool needs_input_grad() const { return needs_input_grad_; }

  std::vector<std::unique_ptr<Parameter>>& own_parameters() { return params_; }
  std::vector<std::unique_ptr<ModuleBuffer>>& own_buffers() { return buffers_; }

 protected:
  Parameter& add_parameter(std::string name, const Shape& shape, const Init& init);
  ModuleBuffer& add_buffer(std::string name, const Shape& shape, float fill);
  // Tells the model's hook (if any) that p's gradient is final for this backward pass.
  void grad_ready(const Parameter& p) const {
    if (hook_ != nullptr && *hook_) (*hook_)(p.index());
  }
  bool training_ = true;
  bool needs_input_grad_ = true;

 private:
  friend class Model;
  void set_hook(const GradReadyHook* hook);  // recursive
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<std::unique_ptr<ModuleBuffer>> buffers_;
  const GradReadyHook* hook_ = nullptr;
};

}  // namespace lockstep::nn
