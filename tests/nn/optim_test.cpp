// Optimizers against hand-computed steps, clipping, schedules, state round trips, and
// bitwise determinism of training.
#include <gtest/gtest.h>

#include <cmath>

#include "grad_check.h"
#include "lockstep/core/error.h"
#include "lockstep/nn/blas.h"
#include "lockstep/nn/layers.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/nn/optim.h"

namespace lockstep::nn {
namespace {

// A 3-parameter model: Linear(2, 1) with w = [1, -2], b = 0.5 and gradients [0.3, -0.1, 0.2].
std::unique_ptr<Model> tiny() {
  auto m = testing::wrap<Linear>(2, 1);
  auto& w = *m->parameters()[0];
  auto& b = *m->parameters()[1];
  w.value()[0] = 1.0f;
  w.value()[1] = -2.0f;
  b.value()[0] = 0.5f;
  return m;
}
void set_grads(Model& m) {
  m.parameters()[0]->grad()[0] = 0.3f;
  m.parameters()[0]->grad()[1] = -0.1f;
  m.parameters()[1]->grad()[0] = 0.2f;
}
std::vector<double> values(Model& m) {
  return {m.parameters()[0]->value()[0], m.parameters()[0]->value()[1], m.parameters()[1]->value()[0]};
}

TEST(Sgd, MomentumWeightDecayAndNesterovMatchHandComputation) {
  for (bool nesterov : {false, true}) {
    auto m = tiny();
    Sgd opt(*m, {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f, .nesterov = nesterov});
    std::vector<double> w = {1.0, -2.0, 0.5}, g = {0.3, -0.1, 0.2}, buf = {0, 0, 0};
    for (int step = 0; step < 3; ++step) {
      set_grads(*m);
      opt.step();
      for (size_t i = 0; i < 3; ++i) {
        const double d = g[i] + 0.01 * w[i];
        buf[i] = 0.9 * buf[i] + d;
        w[i] -= 0.1 * (nesterov ? d + 0.9 * buf[i] : buf[i]);
      }
      auto got = values(*m);
      for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(got[i], w[i], 1e-6) << "step " << step << " param " << i;
    }
    EXPECT_EQ(opt.steps(), 3);
  }
}

// Every SGD path (plain, plain with weight decay, momentum alone, and with weight decay and/or
// Nesterov) against the torch.optim.SGD recurrence in double, on 50 elements (vector loops and
// their tails) with gradients that change every step. Each step rounds d = g + wd w, b = mu b + d
// and w -= lr (...) a few times in float32, each error below 2^-24 times |w|, |b| or |d| of that
// step; a momentum error reaches w scaled by lr / (1 - mu) = 1 at most. So 8 2^-24 times the sum
// over steps of |w| + |b| + |d| bounds the difference.
TEST(Sgd, EveryPathMatchesTheRecurrenceStepByStep) {
  struct Case {
    float momentum, weight_decay;
    bool nesterov;
  };
  for (const Case c : {Case{0, 0, false}, Case{0, 0.05f, false}, Case{0.9f, 0, false},
                       Case{0.9f, 0, true}, Case{0.9f, 0.05f, false}, Case{0.9f, 0.05f, true}}) {
    SCOPED_TRACE(::testing::Message() << "momentum " << c.momentum << ", weight_decay "
                                      << c.weight_decay << ", nesterov " << c.nesterov);
    auto m = testing::wrap<Linear>(9, 5);
    auto flat = m->flat_params();
    const size_t n = flat.size();
    ASSERT_EQ(n, 50u);
    std::vector<double> w(n), b(n, 0.0), bound(n, 0.0);
    for (size_t i = 0; i < n; ++i) w[i] = flat[i] = float(int(i % 13) - 6) / 4.0f;
    const double lr = 0.1;
    Sgd opt(*m, {.lr = float(lr),
                 .momentum = c.momentum,
                 .weight_decay = c.weight_decay,
                 .nesterov = c.nesterov});
    for (int step = 0; step < 4; ++step) {
      auto grads = m->flat_grads();
      for (size_t i = 0; i < n; ++i) {
        const double g = double(int((i * 7 + size_t(step) * 5) % 11) - 5) / 8.0;
        grads[i] = float(g);
        const double d = g + double(c.weight_decay) * w[i];
        b[i] = double(c.momentum) * b[i] + d;
        const double dir = c.momentum == 0 ? d : c.nesterov ? d + double(c.momentum) * b[i] : b[i];
        w[i] -= lr * dir;
        bound[i] += 8 * 0x1p-24 * (std::fabs(w[i]) + std::fabs(b[i]) + std::fabs(d));
      }
      opt.step();
      for (size_t i = 0; i < n; ++i)
        ASSERT_NEAR(flat[i], w[i], bound[i]) << "step " << step << ", element " << i;
    }
  }
}

TEST(Sgd, PlainStep) {
  auto m = tiny();
  Sgd opt(*m, {.lr = 0.5f});
  set_grads(*m);
  opt.step();
  auto got = values(*m);
  EXPECT_FLOAT_EQ(float(got[0]), 1.0f - 0.15f);
  EXPECT_FLOAT_EQ(float(got[1]), -2.0f + 0.05f);
  EXPECT_FLOAT_EQ(float(got[2]), 0.5f - 0.1f);
  EXPECT_THROW(Sgd(*m, {.lr = 0.1f, .nesterov = true}), InvalidArgument);
}

TEST(AdamW, MatchesHandComputation) {
  auto m = tiny();
  AdamW opt(*m, {.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.1f});
  std::vector<double> w = {1.0, -2.0, 0.5}, g = {0.3, -0.1, 0.2}, mm = {0, 0, 0}, vv = {0, 0, 0};
  for (int t = 1; t <= 3; ++t) {
    set_grads(*m);
    opt.step();
    for (size_t i = 0; i < 3; ++i) {
      w[i] *= 1.0 - 0.01 * 0.1;
      mm[i] = 0.9 * mm[i] + 0.1 * g[i];
      vv[i] = 0.99 * vv[i] + 0.01 * g[i] * g[i];
      const double mhat = mm[i] / (1 - std::pow(0.9, t)), vhat = vv[i] / (1 - std::pow(0.99, t));
      w[i] -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    }
    auto got = values(*m);
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(got[i], w[i], 1e-6) << "step " << t << " param " << i;
  }
}

TEST(Optimizer, StateRoundTripContinuesIdentically) {
  auto a = tiny(), b = tiny();
  AdamW oa(*a, {}), ob(*b, {});
  for (int i = 0; i < 2; ++i) {
    set_grads(*a);
    oa.step();
  }
  // "Checkpoint": copy params and optimizer state out of a into b.
  std::copy(a->flat_params().begin(), a->flat_params().end(), b->flat_params().begin());
  std::vector<std::vector<float>> saved;
  std::vector<NamedConstSpan> spans;
  for (NamedSpan& s : oa.state()) saved.emplace_back(s.values.begin(), s.values.end());
  auto names = oa.state();
  for (size_t i = 0; i < names.size(); ++i) spans.push_back({names[i].name, saved[i]});
  ob.load_state(spans);
  EXPECT_EQ(ob.steps(), 2);
  set_grads(*a);
  set_grads(*b);
  oa.step();
  ob.step();
  EXPECT_TRUE(std::equal(a->flat_params().begin(), a->flat_params().end(), b->flat_params().begin()));
  EXPECT_EQ(names[1].name, "weight.exp_avg");
  spans.pop_back();
  EXPECT_THROW(ob.load_state(spans), InvalidArgument);
}

TEST(ClipGradNorm, ScalesToMaxNorm) {
  auto m = tiny();
  m->parameters()[0]->grad()[0] = 3.0f;
  m->parameters()[0]->grad()[1] = 0.0f;
  m->parameters()[1]->grad()[0] = 4.0f;
  EXPECT_FLOAT_EQ(clip_grad_norm(*m, 1.0f), 5.0f);
  EXPECT_NEAR(m->parameters()[0]->grad()[0], 0.6f, 1e-6f);
  EXPECT_NEAR(m->parameters()[1]->grad()[0], 0.8f, 1e-6f);
  EXPECT_NEAR(clip_grad_norm(*m, 10.0f), 1.0f, 1e-6f);  // below the cap: unchanged
  EXPECT_NEAR(m->parameters()[1]->grad()[0], 0.8f, 1e-6f);
}

TEST(LrSchedules, Values) {
  EXPECT_FLOAT_EQ(ConstantLr(0.3f).lr(1000), 0.3f);
  StepLr st(1.0f, 10, 0.5f);
  EXPECT_FLOAT_EQ(st.lr(9), 1.0f);
  EXPECT_FLOAT_EQ(st.lr(25), 0.25f);
  CosineLr cos(1.0f, 100, 0.1f);
  EXPECT_FLOAT_EQ(cos.lr(0), 1.0f);
  EXPECT_NEAR(cos.lr(50), 0.55f, 1e-6f);
  EXPECT_FLOAT_EQ(cos.lr(100), 0.1f);
  WarmupLr warm(std::make_unique<ConstantLr>(1.0f), 4);
  EXPECT_FLOAT_EQ(warm.lr(0), 0.25f);
  EXPECT_FLOAT_EQ(warm.lr(3), 1.0f);
  EXPECT_FLOAT_EQ(warm.lr(40), 1.0f);
  EXPECT_FLOAT_EQ(linear_scaled_lr(0.1f, 256, 64), 0.4f);
  EXPECT_THROW(linear_scaled_lr(0.1f, 0, 64), InvalidArgument);
}

// Trains `steps` SGD steps on fixed random data and returns the final weights.
std::vector<float> train(const std::string& name, int steps) {
  auto m = make_model(name, 11);
  Sgd opt(*m, {.lr = 0.05f, .momentum = 0.9f});
  CrossEntropyLoss ce;
  Tensor x = testing::random_tensor({16, 1, 28, 28}, 5, 0.0f, 1.0f);
  std::vector<int32_t> y(16);
  for (int i = 0; i < 16; ++i) y[size_t(i)] = i % 10;
  for (int s = 0; s < steps; ++s) {
    m->zero_grad();
    ce.forward(m->forward(x), y);
    m->backward(ce.backward());
    opt.step();
  }
  return {m->flat_params().begin(), m->flat_params().end()};
}

TEST(Determinism, SameSeedGivesBitwiseSameWeights) {
  for (const char* name : {"fmnist-mlp", "fmnist-cnn"}) {
    auto a = train(name, 4), b = train(name, 4);
    EXPECT_TRUE(a == b) << name;
  }
}

TEST(Determinism, FixedThreadCountAboveOneIsAlsoReproducible) {
  set_num_threads(2);
  auto a = train("fmnist-cnn", 3), b = train("fmnist-cnn", 3);
  set_num_threads(1);
  EXPECT_TRUE(a == b);
}

TEST(Training, LossGoesDownOnAFixedBatch) {
  auto m = make_model("fmnist-mlp", 3);
  Sgd opt(*m, {.lr = 0.05f, .momentum = 0.9f});
  CrossEntropyLoss ce;
  Tensor x = testing::random_tensor({8, 1, 28, 28}, 6, 0.0f, 1.0f);
  std::vector<int32_t> y = {0, 1, 2, 3, 4, 5, 6, 7};
  float first = 0, last = 0;
  for (int s = 0; s < 30; ++s) {
    m->zero_grad();
    last = ce.forward(m->forward(x), y);
    if (s == 0) first = last;
    m->backward(ce.backward());
    opt.step();
  }
  EXPECT_LT(last, 0.1f * first);
}

}  // namespace
}  // namespace lockstep::nn
