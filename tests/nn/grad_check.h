// Finite-difference gradient checks for nn layers. The scalar under test is
// L = sum_i y_i r_i for a fixed random r, accumulated in double; its numerical derivative
// (central differences) is compared with what backward() produced, for the input and for
// every parameter.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>

#include "lockstep/nn/model.h"
#include "lockstep/nn/rng.h"

namespace lockstep::nn::testing {

struct GradCheckOptions {
  float eps = 1e-2f;
  double atol = 2e-3;
  double rtol = 2e-2;
  bool check_input = true;
};

inline double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0.0;
  for (int64_t i = 0; i < y.numel(); ++i) s += double(y[i]) * double(r[i]);
  return s;
}

inline void expect_close(double analytic, double numeric, const GradCheckOptions& o, const std::string& what) {
  EXPECT_LE(std::abs(analytic - numeric), o.atol + o.rtol * std::abs(numeric))
      << what << ": analytic " << analytic << " vs numeric " << numeric;
}

// `model` wraps the layer under test; `x` is its input (modified and restored in place).
inline void check_gradients(Model& model, Tensor& x, const GradCheckOptions& o = {}) {
  model.root().set_needs_input_grad(o.check_input);
  const Tensor& y0 = model.forward(x);
  Tensor r(y0.shape());
  Rng rng(1234);
  for (int64_t i = 0; i < r.numel(); ++i) r[i] = rng.uniform(-1.0f, 1.0f);
  model.zero_grad();
  model.forward(x);
  Tensor dx;
  {
    const Tensor& g = model.backward(r);
    if (o.check_input) {
      dx = Tensor(g.shape());
      dx.copy_from(g);
    }
  }
  auto loss_at = [&](float* slot, float v) {
    const float saved = *slot;
    *slot = v;
    const double l = weighted_sum(model.forward(x), r);
    *slot = saved;
    return l;
  };
  auto numeric = [&](float* slot) {
    const float v = *slot;
    return (loss_at(slot, v + o.eps) - loss_at(slot, v - o.eps)) / (2.0 * double(o.eps));
  };
  if (o.check_input)
    for (int64_t i = 0; i < x.numel(); ++i) expect_close(dx[i], numeric(&x[i]), o, "d input[" + std::to_string(i) + "]");
  for (Parameter* p : model.parameters()) {
    std::vector<float> analytic(p->grad().begin(), p->grad().end());
    for (int64_t i = 0; i < p->numel(); ++i)
      expect_close(analytic[size_t(i)], numeric(p->value_data() + i), o, "d " + p->name() + "[" + std::to_string(i) + "]");
  }
}

inline Tensor random_tensor(const Shape& s, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(s);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(lo, hi);
  return t;
}

// Values with magnitude >= margin, so piecewise-linear layers (ReLU) are not probed at a kink.
inline Tensor away_from_zero(const Shape& s, uint64_t seed, float margin = 0.05f) {
  Tensor t = random_tensor(s, seed);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = t[i] >= 0 ? t[i] + margin : t[i] - margin;
  return t;
}

// Distinct values spaced 0.1 apart in a shuffled order: max pooling has no near-ties.
inline Tensor distinct_values(const Shape& s, uint64_t seed) {
  Tensor t(s);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = 0.1f * float(i) - 0.05f * float(t.numel());
  for (int64_t i = t.numel() - 1; i > 0; --i) std::swap(t[i], t[int64_t(rng.next_u32() % uint32_t(i + 1))]);
  return t;
}

template <class M, class... Args>
std::unique_ptr<Model> wrap(Args&&... args) {
  return std::make_unique<Model>(std::make_unique<M>(std::forward<Args>(args)...), 7);
}

}  // namespace lockstep::nn::testing
