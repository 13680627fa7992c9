// Losses: each returns the mean loss over the batch from forward and the gradient with
// respect to its input from backward (already divided by the batch size).
//
//   CrossEntropyLoss ce;
//   float loss = ce.forward(logits, labels);   // logits [..., classes], labels one per row
//   model.backward(ce.backward());
#pragma once

#include <cstdint>
#include <span>

#include "lockstep/nn/tensor.h"

namespace lockstep::nn {

// Softmax + negative log-likelihood fused: the gradient is softmax - onehot, computed in one
// pass without forming log-probabilities separately (stable for any logit range).
class CrossEntropyLoss {
 public:
  float forward(const Tensor& logits, std::span<const int32_t> labels);
  const Tensor& backward() const { return grad_; }
  // Rows whose largest logit is at the label (ties go to the lowest index), from forward.
  int64_t correct() const { return correct_; }

 private:
  Tensor grad_;
  int64_t correct_ = 0;
};

class MSELoss {
 public:
  float forward(const Tensor& pred, const Tensor& target);  // mean over all elements
  const Tensor& backward() const { return grad_; }

 private:
  Tensor grad_;
};

// Index of the largest logit in each row of [rows, classes].
void argmax_rows(const Tensor& logits, std::span<int32_t> out);

}  // namespace lockstep::nn
