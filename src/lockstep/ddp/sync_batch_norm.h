// SyncBatchNorm: BatchNorm2d whose batch statistics cover every rank's batch, so W workers
// with batch B normalise exactly as one worker with batch W*B would. Forward all-reduces
// per-channel (sum, sum of squares, count); backward all-reduces (sum dy, sum dy*xhat).
// Weight and bias gradients stay local sums; DDP's gradient average makes them global.
// Parameter and buffer names match nn::BatchNorm2d, so checkpoints are interchangeable.
//
//   seq.add(std::make_unique<ddp::SyncBatchNorm>(64, *pg));   // instead of BatchNorm2d(64)
//
// Every rank must run forward/backward of the same layers in the same order (the
// collectives must match); eval mode uses the running statistics and communicates nothing.
#pragma once

#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/nn/module.h"

namespace lockstep::ddp {

class SyncBatchNorm : public nn::Module {
 public:
  SyncBatchNorm(int64_t channels, comm::ProcessGroup& pg, float eps = 1e-5f, float momentum = 0.1f,
                Millis timeout = std::chrono::seconds(300));
  const nn::Tensor& forward(const nn::Tensor& x) override;
  const nn::Tensor& backward(const nn::Tensor& dy) override;
  std::string describe() const override;

 private:
  void statistics(const nn::Tensor& x, std::vector<float>& mean);
  comm::ProcessGroup& pg_;
  int64_t c_;
  float eps_, momentum_;
  Millis timeout_;
  nn::Parameter* w_;
  nn::Parameter* b_;
  nn::ModuleBuffer* mean_;
  nn::ModuleBuffer* var_;
  std::vector<float> invstd_;
  std::vector<double> sums_;  // all-reduce staging
  double total_ = 0;          // values per channel over all ranks
  nn::Tensor xhat_, y_, dx_;
};

}  // namespace lockstep::ddp
