#include "lockstep/nn/loss.h"

#include <cmath>

#include "lockstep/core/error.h"

namespace lockstep::nn {

float CrossEntropyLoss::forward(const Tensor& logits, std::span<const int32_t> labels) {
  if (logits.rank() < 1 || logits.numel() == 0)
    LOCKSTEP_THROW(InvalidArgument, "CrossEntropyLoss: logits ", logits.shape().str(), " are empty");
  const int64_t classes = logits.dim(-1), rows = logits.numel() / classes;
  if (int64_t(labels.size()) != rows)
    LOCKSTEP_THROW(InvalidArgument, "CrossEntropyLoss: ", labels.size(), " labels for ", rows, " rows of logits ",
                   logits.shape().str());
  grad_.resize(logits.shape());
  double total = 0.0;
  correct_ = 0;
  const float inv_rows = 1.0f / float(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits.data() + r * classes;
    float* g = grad_.data() + r * classes;
    const int32_t y = labels[size_t(r)];
    if (y < 0 || y >= classes)
      LOCKSTEP_THROW(InvalidArgument, "CrossEntropyLoss: label ", y, " at row ", r, " is outside [0, ", classes, ")");
    int64_t best = 0;
    for (int64_t j = 1; j < classes; ++j)
      if (z[j] > z[best]) best = j;
    correct_ += best == y;
    const float zmax = z[best];
    float sum = 0.0f;
    for (int64_t j = 0; j < classes; ++j) {
      g[j] = std::exp(z[j] - zmax);
      sum += g[j];
    }
    // loss_r = log(sum) - (z_y - zmax); gradient = softmax - onehot, scaled for the mean.
    total += double(std::log(sum) - (z[y] - zmax));
    const float inv = inv_rows / sum;
    for (int64_t j = 0; j < classes; ++j) g[j] *= inv;
    g[y] -= inv_rows;
  }
  return float(total / double(rows));
}

float MSELoss::forward(const Tensor& pred, const Tensor& target) {
  if (pred.numel() != target.numel() || pred.numel() == 0)
    LOCKSTEP_THROW(InvalidArgument, "MSELoss: prediction ", pred.shape().str(), " and target ", target.shape().str(),
                   " must have the same, non-zero number of elements");
  grad_.resize(pred.shape());
  double total = 0.0;
  const float scale = 2.0f / float(pred.numel());
  for (int64_t i = 0; i < pred.numel(); ++i) {
    const float d = pred[i] - target[i];
    total += double(d) * double(d);
    grad_[i] = scale * d;
  }
  return float(total / double(pred.numel()));
}

void argmax_rows(const Tensor& logits, std::span<int32_t> out) {
  const int64_t classes = logits.dim(-1), rows = logits.numel() / classes;
  LOCKSTEP_CHECK_EQ(int64_t(out.size()), rows, "argmax_rows: output size");
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits.data() + r * classes;
    int32_t best = 0;
    for (int32_t j = 1; j < classes; ++j)
      if (z[j] > z[best]) best = j;
    out[size_t(r)] = best;
  }
}

}  // namespace lockstep::nn
