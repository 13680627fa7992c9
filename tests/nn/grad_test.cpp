// Every layer's backward against central finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "grad_check.h"
#include "lockstep/core/error.h"
#include "lockstep/nn/layers.h"

namespace lockstep::nn {
namespace {
using testing::check_gradients;
using testing::wrap;

TEST(GradCheck, LinearOddSizes) {
  for (int64_t batch : {1, 3}) {
    auto m = wrap<Linear>(5, 7);
    Tensor x = testing::random_tensor({batch, 5}, 1);
    check_gradients(*m, x);
  }
}

TEST(GradCheck, LinearNoBiasThreeDims) {
  auto m = wrap<Linear>(4, 3, false);
  Tensor x = testing::random_tensor({2, 3, 4}, 2);
  check_gradients(*m, x);
}

// Both implementations: im2col always, oneDNN when built with it.
std::vector<ConvImpl> conv_impls() {
  if (have_dnnl_conv()) return {ConvImpl::kIm2col, ConvImpl::kDnnl};
  return {ConvImpl::kIm2col};
}

const char* name(ConvImpl impl) { return impl == ConvImpl::kDnnl ? "oneDNN" : "im2col"; }

TEST(GradCheck, Conv2dPaddingAndStride) {
  struct Case { int64_t n, c, oc, h, w, k, s, p; };
  for (ConvImpl impl : conv_impls()) {
    ScopedConvImpl use(impl);
    for (Case c : {Case{1, 1, 2, 5, 5, 3, 1, 1}, Case{2, 3, 4, 6, 5, 3, 2, 1}, Case{1, 2, 3, 4, 4, 2, 1, 0},
                   Case{2, 2, 2, 7, 6, 3, 3, 2}}) {
      SCOPED_TRACE(name(impl));
      auto m = wrap<Conv2d>(c.c, c.oc, c.k, c.s, c.p);
      Tensor x = testing::random_tensor({c.n, c.c, c.h, c.w}, 3);
      check_gradients(*m, x);
    }
  }
}

// oneDNN and im2col agree on y, dx, dw and db — across strides, paddings, odd sizes, batch
// 1, k 5, no bias, a shape change and back, and gradients accumulated over two backwards.
TEST(Conv2dImpl, OneDnnAgreesWithIm2col) {
  if (!have_dnnl_conv()) GTEST_SKIP() << "built without oneDNN";
  struct Case { int64_t n, c, oc, h, w, k, s, p; bool bias; };
  struct Out {
    std::vector<float> y, dx, grads;
  };
  // `magnitude`: the same sums over |x|, |w|, |dy|, so each output is the sum of the absolute
  // values of the terms that make it up.
  auto run = [](ConvImpl impl, const Case& c, bool magnitude = false) {
    ScopedConvImpl use(impl);
    auto m = wrap<Conv2d>(c.c, c.oc, c.k, c.s, c.p, c.bias);
    auto abs_all = [&](Tensor& t) {
      if (magnitude)
        for (int64_t i = 0; i < t.numel(); ++i) t[i] = std::fabs(t[i]);
    };
    if (magnitude)
      for (Parameter* p : m->parameters())
        for (float& v : p->value()) v = std::fabs(v);
    m->root().set_needs_input_grad(true);  // a model's first layer skips dx otherwise
    Out o;
    m->zero_grad();
    for (int64_t n : {c.n, c.n + 2, c.n}) {  // a second shape, then the first again
      Tensor x = testing::random_tensor({n, c.c, c.h, c.w}, uint64_t(11 + n));
      abs_all(x);
      const Tensor& y = m->forward(x);
      o.y.assign(y.data(), y.data() + y.numel());
      Tensor dy = testing::random_tensor(y.shape(), uint64_t(17 + n));
      abs_all(dy);
      const Tensor& dx = m->backward(dy);
      o.dx.assign(dx.data(), dx.data() + dx.numel());
    }
    auto g = m->flat_grads();
    o.grads.assign(g.begin(), g.end());
    return o;
  };
  // Two implementations may sum each output's n terms in any order: they differ by at most
  // 2 gamma(n) times the sum of the terms' absolute values (u = 2^-24, gamma(n) = n u / (1 - n u)),
  // element by element, whatever kernels the CPU gets.
  auto expect_close = [](const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& mag,
                         int64_t n, const char* what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    const double bound = 2 * double(n) * 0x1p-24 / (1 - double(n) * 0x1p-24);
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_LE(std::fabs(a[i] - b[i]), bound * mag[i] + 1e-30)
          << what << "[" << i << "]: oneDNN " << a[i] << ", im2col " << b[i] << ", sum of |terms| " << mag[i]
          << ", " << n << " terms";
  };
  for (Case c : {Case{1, 1, 2, 5, 5, 3, 1, 1, true}, Case{3, 3, 4, 9, 7, 3, 2, 1, true},
                 Case{2, 2, 3, 8, 8, 2, 1, 0, false}, Case{2, 4, 5, 11, 9, 5, 1, 2, true},
                 Case{1, 32, 64, 14, 14, 3, 1, 1, true}, Case{2, 3, 6, 13, 13, 5, 2, 2, false}}) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + " c=" + std::to_string(c.c) + " oc=" + std::to_string(c.oc) +
                 " hw=" + std::to_string(c.h) + "x" + std::to_string(c.w) + " k=" + std::to_string(c.k) +
                 " s=" + std::to_string(c.s) + " p=" + std::to_string(c.p) + (c.bias ? "" : " no bias"));
    const Out a = run(ConvImpl::kDnnl, c), b = run(ConvImpl::kIm2col, c), mag = run(ConvImpl::kIm2col, c, true);
    // Terms per output: y sums c k^2 products and the bias; dx at most oc k^2; dw and db sum
    // over the samples and output positions of all three backwards.
    const int64_t ho = (c.h + 2 * c.p - c.k) / c.s + 1, wo = (c.w + 2 * c.p - c.k) / c.s + 1;
    expect_close(a.y, b.y, mag.y, c.c * c.k * c.k + 1, "y");
    expect_close(a.dx, b.dx, mag.dx, c.oc * c.k * c.k, "dx");
    expect_close(a.grads, b.grads, mag.grads, (3 * c.n + 2) * ho * wo, "dw, db (accumulated over 3 backwards)");
  }
}

TEST(Conv2dImpl, ChoosingOneDnnWithoutItIsAConfigError) {
  if (have_dnnl_conv()) {
    ScopedConvImpl use(ConvImpl::kDnnl);
    EXPECT_EQ(conv_impl(), ConvImpl::kDnnl);
  } else {
    EXPECT_THROW(set_conv_impl(ConvImpl::kDnnl), lockstep::ConfigError);
    EXPECT_EQ(conv_impl(), ConvImpl::kIm2col);
  }
}

TEST(GradCheck, MaxPool2d) {
  auto m = wrap<MaxPool2d>(2);
  Tensor x = testing::distinct_values({2, 3, 5, 4}, 4);  // odd size: last row dropped
  check_gradients(*m, x);
  auto m2 = wrap<MaxPool2d>(3, 2, 1);
  Tensor x2 = testing::distinct_values({1, 2, 6, 5}, 5);
  check_gradients(*m2, x2);
}

TEST(GradCheck, AvgPool2d) {
  auto m = wrap<AvgPool2d>(2);
  Tensor x = testing::random_tensor({2, 2, 5, 4}, 6);
  check_gradients(*m, x);
  auto m2 = wrap<AvgPool2d>(3, 2, 1);
  Tensor x2 = testing::random_tensor({1, 1, 5, 6}, 7);
  check_gradients(*m2, x2);
}

TEST(GradCheck, ReluGeluFlatten) {
  auto relu = wrap<ReLU>();
  Tensor x = testing::away_from_zero({3, 7}, 8);
  check_gradients(*relu, x);
  auto gelu = wrap<GELU>();
  Tensor x2 = testing::random_tensor({2, 5}, 9, -3.0f, 3.0f);
  check_gradients(*gelu, x2);
  auto flat = wrap<Flatten>();
  Tensor x3 = testing::random_tensor({2, 3, 2, 2}, 10);
  check_gradients(*flat, x3);
}

TEST(Relu, PropagatesNan) {
  auto relu = wrap<ReLU>();
  Tensor x({3});
  x[0] = -1.0f;
  x[1] = std::nanf("");
  x[2] = 2.0f;
  const Tensor& y = relu->forward(x);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_TRUE(std::isnan(y[1]));
  EXPECT_EQ(y[2], 2.0f);
}

TEST(GradCheck, DropoutTrainAndEval) {
  auto m = wrap<Dropout>(0.5f, 99);
  Tensor x = testing::random_tensor({4, 9}, 11);
  // Each forward draws a fresh mask, so finite differences cannot see one mask; check the
  // gradient against the mask directly instead: dx = dy * y / x.
  const Tensor& y = m->forward(x);
  Tensor yc(y.shape());
  yc.copy_from(y);
  Tensor dy = testing::random_tensor(x.shape(), 12);
  m->root().set_needs_input_grad(true);
  const Tensor& dx = m->backward(dy);
  int zeros = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float scale = yc[i] / x[i];
    EXPECT_TRUE(scale == 0.0f || std::abs(scale - 2.0f) < 1e-5f) << scale;
    EXPECT_FLOAT_EQ(dx[i], dy[i] * scale);
    zeros += scale == 0.0f;
  }
  EXPECT_GT(zeros, 5);
  EXPECT_LT(zeros, 31);
  m->eval();
  check_gradients(*m, x);
}

TEST(GradCheck, BatchNorm2dTrainAndEval) {
  auto m = wrap<BatchNorm2d>(3);
  // Non-trivial affine parameters so that their gradients matter.
  for (Parameter* p : m->parameters())
    for (float& v : p->value()) v = 0.5f + 0.1f * float(&v - p->value_data());
  Tensor x = testing::random_tensor({2, 3, 3, 2}, 13);
  check_gradients(*m, x, {.eps = 1e-2f, .atol = 5e-3, .rtol = 3e-2});
  m->eval();
  check_gradients(*m, x);
}

TEST(GradCheck, BatchNormBatchOne) {
  auto m = wrap<BatchNorm2d>(2);
  Tensor x = testing::random_tensor({1, 2, 3, 3}, 14);
  check_gradients(*m, x, {.eps = 1e-2f, .atol = 5e-3, .rtol = 3e-2});
}

TEST(GradCheck, LayerNorm) {
  auto m = wrap<LayerNorm>(5);
  for (Parameter* p : m->parameters())
    for (float& v : p->value()) v = 0.7f + 0.1f * float(&v - p->value_data());
  Tensor x = testing::random_tensor({3, 5}, 15);
  check_gradients(*m, x, {.eps = 1e-2f, .atol = 5e-3, .rtol = 3e-2});
}

TEST(GradCheck, EmbeddingAndPositional) {
  auto m = wrap<Embedding>(6, 4);
  Tensor ids({2, 3});
  const float tok[] = {0, 5, 2, 2, 1, 5};  // repeated ids accumulate
  for (int i = 0; i < 6; ++i) ids[i] = tok[i];
  check_gradients(*m, ids, {.check_input = false});
  auto pos = wrap<PositionalEmbedding>(4, 3, 0.5f);
  Tensor x = testing::random_tensor({2, 3, 3}, 16);
  check_gradients(*pos, x);
}

TEST(GradCheck, CausalSelfAttention) {
  auto m = wrap<CausalSelfAttention>(6, 2);
  Tensor x = testing::random_tensor({2, 4, 6}, 17);
  check_gradients(*m, x, {.eps = 1e-2f, .atol = 3e-3, .rtol = 3e-2});
}

TEST(GradCheck, SequentialAndResidual) {
  auto inner = std::make_unique<Sequential>();
  inner->emplace<Linear>(4, 4).emplace<GELU>().emplace<Linear>(4, 4);
  auto s = std::make_unique<Sequential>();
  s->emplace<Linear>(3, 4).emplace<Residual>(std::move(inner)).emplace<LayerNorm>(4);
  Model m(std::move(s), 3);
  Tensor x = testing::random_tensor({2, 3}, 18);
  check_gradients(m, x, {.eps = 1e-2f, .atol = 5e-3, .rtol = 3e-2});
}

TEST(GradCheck, SmallCnnEndToEnd) {
  auto s = std::make_unique<Sequential>();
  s->emplace<Conv2d>(1, 2, 3, 1, 1).emplace<ReLU>().emplace<MaxPool2d>(2);
  s->emplace<Flatten>().emplace<Linear>(8, 3);
  Model m(std::move(s), 5);
  Tensor x = testing::random_tensor({2, 1, 4, 4}, 19);
  check_gradients(m, x, {.eps = 1e-3f, .atol = 5e-3, .rtol = 3e-2});
}

}  // namespace
}  // namespace lockstep::nn
