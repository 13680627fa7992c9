#include "lockstep/nn/module.h"

namespace lockstep::nn {

void Module::set_training(bool training) {
  training_ = training;
  for_each_child([&](const std::string&, Module& m) { m.set_training(training); });
}

Parameter& Module::add_parameter(std::string name, const Shape& shape, const Init& init) {
  params_.push_back(std::make_unique<Parameter>(std::move(name), shape, init));
  return *params_.back();
}

ModuleBuffer& Module::add_buffer(std::string name, const Shape& shape, float fill) {
  buffers_.push_back(std::make_unique<ModuleBuffer>(std::move(name), shape, fill));
  return *buffers_.back();
}

void Module::set_hook(const GradReadyHook* hook) {
  hook_ = hook;
  for_each_child([&](const std::string&, Module& m) { m.set_hook(hook); });
}

}  // namespace lockstep::nn
