// ModelParams: the ParamSource of an nn::Model — the only file of the reducer's seam that
// knows nn. It exposes parameters in Model::parameters() order, buffers, and re-lays the
// model's flat gradient buffer out on request (nn::Model::set_grad_order).
#pragma once

#include <vector>

#include "lockstep/ddp/params.h"
#include "lockstep/nn/model.h"

namespace lockstep::ddp {

class ModelParams final : public ParamSource {
 public:
  explicit ModelParams(nn::Model& model);

  size_t num_params() const override { return params_.size(); }
  const TensorInfo& param_info(size_t i) const override { return params_[i]; }
  std::span<float> value(size_t i) override { return model_.parameters()[i]->value(); }
  std::span<float> grad(size_t i) override { return model_.parameters()[i]->grad(); }
  bool set_grad_order(std::span<const size_t> order) override;
  bool move_grads_to(std::span<float> storage) override {
    model_.move_grads_to(storage);
    return true;
  }

  size_t num_buffers() const override { return buffers_.size(); }
  const TensorInfo& buffer_info(size_t i) const override { return buffers_[i]; }
  std::span<float> buffer(size_t i) override { return model_.buffers()[i]->value(); }

  nn::Model& model() { return model_; }

 private:
  nn::Model& model_;
  std::vector<TensorInfo> params_, buffers_;
};

}  // namespace lockstep::ddp
