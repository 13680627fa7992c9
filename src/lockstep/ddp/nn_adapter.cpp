#include "lockstep/ddp/nn_adapter.h"

namespace lockstep::ddp {
namespace {
std::vector<int64_t> dims(const nn::Shape& s) { return {s.dims().begin(), s.dims().end()}; }
}  // namespace

ModelParams::ModelParams(nn::Model& model) : model_(model) {
  for (const nn::Parameter* p : model.parameters()) params_.push_back({p->name(), dims(p->shape()), DType::f32});
  for (const nn::ModuleBuffer* b : model.buffers()) buffers_.push_back({b->name(), dims(b->shape()), DType::f32});
}

bool ModelParams::set_grad_order(std::span<const size_t> order) {
  model_.set_grad_order(order);
  return true;
}

}  // namespace lockstep::ddp
