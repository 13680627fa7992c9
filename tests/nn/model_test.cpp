// Model: flat layout, the grad-ready seam, names, reference models, tensors and the RNG.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "grad_check.h"
#include "lockstep/core/error.h"
#include "lockstep/nn/layers.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/nn/optim.h"

namespace lockstep::nn {
namespace {

TEST(Model, ReferenceModelsHaveTheBenchmarkShapes) {
  auto mlp = make_model("fmnist-mlp", 1);
  EXPECT_EQ(mlp->num_params(), 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10);
  auto cnn = make_model("fmnist-cnn", 1);
  EXPECT_EQ(cnn->num_params(), 32 * 9 + 32 + 64 * 32 * 9 + 64 + 3136 * 128 + 128 + 128 * 10 + 10);
  EXPECT_EQ(cnn->parameters()[0]->name(), "0.weight");
  EXPECT_EQ(cnn->parameters().back()->name(), "9.bias");
  Tensor x = testing::random_tensor({3, 1, 28, 28}, 1);
  EXPECT_EQ(cnn->forward(x).shape(), Shape({3, 10}));
  EXPECT_EQ(mlp->forward(x).shape(), Shape({3, 10}));
  EXPECT_THROW(make_model("resnet-9000", 1), ConfigError);
}

TEST(Model, GradientsAreFlatInReverseOrderOfUse) {
  auto m = make_model("fmnist-mlp", 1);
  auto params = m->parameters();
  size_t expect = 0;
  for (size_t i = params.size(); i-- > 0;) {
    EXPECT_EQ(params[i]->grad_offset(), expect) << params[i]->name();
    EXPECT_EQ(params[i]->grad().data(), m->flat_grads().data() + expect);
    EXPECT_EQ(params[i]->value().data(), m->flat_params().data() + expect);
    expect += size_t(params[i]->numel());
  }
  EXPECT_EQ(expect, m->flat_grads().size());
}

// The model's input needs no gradient, and neither does anything in front of the first
// layer with parameters: for the MLP the Flatten and the first Linear's dx are skipped.
// Parameter gradients are bitwise those of a backward that computes every dx.
TEST(Model, NoInputGradientInFrontOfTheFirstParameters) {
  auto lean = make_model("fmnist-mlp", 5), full = make_model("fmnist-mlp", 5);
  full->root().set_needs_input_grad(true);
  Tensor x = testing::random_tensor({4, 1, 28, 28}, 2), dy = testing::random_tensor({4, 10}, 3);
  lean->zero_grad();
  full->zero_grad();
  lean->forward(x);
  full->forward(x);
  EXPECT_FALSE(lean->backward(dy).shape() == x.shape()) << "the input gradient was computed";
  EXPECT_EQ(full->backward(dy).shape(), x.shape());
  auto a = lean->flat_grads(), b = full->flat_grads();
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  EXPECT_GT(std::abs(a[a.size() - 1]), 0.0f);  // the first Linear's weights got a gradient
}

TEST(Model, EveryGradientIsReportedOnceAfterItIsFinal) {
  auto m = make_model("fmnist-cnn", 3);
  std::vector<size_t> order;
  std::vector<std::vector<float>> at_report;
  m->on_grad_ready([&](size_t i) {
    order.push_back(i);
    auto g = m->parameters()[i]->grad();
    at_report.emplace_back(g.begin(), g.end());
  });
  Tensor x = testing::random_tensor({2, 1, 28, 28}, 2);
  CrossEntropyLoss ce;
  const int32_t labels[] = {3, 7};
  m->zero_grad();
  ce.forward(m->forward(x), labels);
  m->backward(ce.backward());
  ASSERT_EQ(order.size(), m->parameters().size());
  EXPECT_EQ(std::set<size_t>(order.begin(), order.end()).size(), order.size());
  // Reverse order of use, layer by layer: the last Linear first.
  EXPECT_EQ(m->parameters()[order.front()]->name().substr(0, 2), "9.");
  EXPECT_EQ(m->parameters()[order.back()]->name().substr(0, 2), "0.");
  // Nothing changed a gradient after it was reported final.
  for (size_t k = 0; k < order.size(); ++k) {
    auto g = m->parameters()[order[k]]->grad();
    EXPECT_TRUE(std::equal(g.begin(), g.end(), at_report[k].begin())) << m->parameters()[order[k]]->name();
  }
}

TEST(Model, SetGradOrderKeepsGradients) {
  auto m = make_model("fmnist-mlp", 3);
  for (size_t i = 0; i < m->flat_grads().size(); ++i) m->flat_grads()[i] = float(i % 97);
  std::vector<std::vector<float>> before;
  for (Parameter* p : m->parameters()) before.emplace_back(p->grad().begin(), p->grad().end());
  std::vector<size_t> order = {0, 1, 2, 3, 4, 5};  // forward order
  m->set_grad_order(order);
  EXPECT_EQ(m->parameters()[0]->grad_offset(), 0u);
  for (size_t i = 0; i < before.size(); ++i) {
    auto g = m->parameters()[i]->grad();
    EXPECT_TRUE(std::equal(g.begin(), g.end(), before[i].begin()));
  }
  std::vector<size_t> bad = {0, 0, 1, 2, 3, 4};
  EXPECT_THROW(m->set_grad_order(bad), InvalidArgument);
}

TEST(Model, BuffersAreListedSeparately) {
  auto s = std::make_unique<Sequential>();
  s->emplace<Conv2d>(1, 2, 3).emplace<BatchNorm2d>(2);
  Model m(std::move(s), 1);
  ASSERT_EQ(m.buffers().size(), 2u);
  EXPECT_EQ(m.buffers()[0]->name(), "1.running_mean");
  EXPECT_EQ(m.buffers()[1]->name(), "1.running_var");
  EXPECT_EQ(m.flat_buffers().size(), 4u);
  EXPECT_EQ(m.buffers()[1]->value()[0], 1.0f);
  Tensor x = testing::random_tensor({2, 1, 4, 4}, 3, 0.0f, 2.0f);
  m.forward(x);
  EXPECT_NE(m.buffers()[0]->value()[0], 0.0f);  // running mean moved toward the batch mean
}

TEST(Model, SameSeedSameWeightsDifferentSeedDifferent) {
  auto a = make_model("fmnist-cnn", 42), b = make_model("fmnist-cnn", 42), c = make_model("fmnist-cnn", 43);
  EXPECT_TRUE(std::equal(a->flat_params().begin(), a->flat_params().end(), b->flat_params().begin()));
  EXPECT_FALSE(std::equal(a->flat_params().begin(), a->flat_params().end(), c->flat_params().begin()));
}

TEST(Model, CharGptRunsForwardAndBackward) {
  auto m = make_char_gpt({.vocab = 11, .block = 8, .dim = 16, .heads = 2, .layers = 2}, 1);
  Tensor ids({2, 8});
  for (int64_t i = 0; i < ids.numel(); ++i) ids[i] = float(i % 11);
  const Tensor& logits = m->forward(ids);
  EXPECT_EQ(logits.shape(), Shape({2, 8, 11}));
  std::vector<int32_t> next(16, 1);
  CrossEntropyLoss ce;
  const float loss = ce.forward(logits, next);
  EXPECT_NEAR(loss, std::log(11.0f), 0.5f);
  size_t reported = 0;
  m->on_grad_ready([&](size_t) { ++reported; });
  m->backward(ce.backward());
  EXPECT_EQ(reported, m->parameters().size());
}

TEST(Model, CharGptLearnsARepeatingSequence) {
  auto m = make_char_gpt({.vocab = 7, .block = 12, .dim = 16, .heads = 2, .layers = 2}, 4);
  AdamW opt(*m, {.lr = 1e-2f, .weight_decay = 0.0f});
  // Input "0123456012..." (period 7); the target is the next character.
  Tensor ids({2, 12});
  std::vector<int32_t> next(24);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 12; ++t) {
      ids[b * 12 + t] = float((t + 3 * b) % 7);
      next[size_t(b * 12 + t)] = int32_t((t + 3 * b + 1) % 7);
    }
  CrossEntropyLoss ce;
  float loss = 0.0f;
  for (int step = 0; step < 150; ++step) {
    m->zero_grad();
    loss = ce.forward(m->forward(ids), next);
    m->backward(ce.backward());
    clip_grad_norm(*m, 1.0f);
    opt.step();
  }
  EXPECT_LT(loss, 0.05f);
  EXPECT_EQ(ce.correct(), 24);
}

TEST(Tensor, ViewsResizeAndDtypes) {
  Tensor t({2, 3});
  for (int i = 0; i < 6; ++i) t[i] = float(i) + 0.5f;
  Tensor v = t.reshape({3, 2});
  EXPECT_EQ(v.data(), t.data());
  Tensor s = t.slice(1, 2);
  EXPECT_EQ(s[0], 3.5f);
  EXPECT_THROW(t.reshape({4}), InvalidArgument);
  const float* before = t.data();
  t.resize({3, 2});
  EXPECT_EQ(t.data(), before);  // no reallocation when it fits
  auto bytes = t.to_bytes(DType::bf16);
  Tensor back({3, 2});
  back.from_bytes(bytes, DType::bf16);
  EXPECT_EQ(back[1], 1.5f);
  Tensor w = Tensor::wrap(t.span(), {6});
  EXPECT_THROW(w.resize({7}), InvalidArgument);
}

TEST(Rng, StreamsArePinned) {
  // Golden values: any change here changes every initial weight on every platform.
  // The PCG32 reference sequence (pcg32-demo: seed 42, stream 54).
  Rng r(42, 54);
  EXPECT_EQ(r.next_u32(), 0xa15c02b7u);
  EXPECT_EQ(r.next_u32(), 0x7b47f409u);
  EXPECT_EQ(r.next_u32(), 0xba1d3330u);
  Rng n(7, 1);
  const double z = n.normal();
  EXPECT_EQ(z, 0x1.051fbc901af5ap+0) << std::hexfloat << z;
  EXPECT_NEAR(portable_log(10.0), std::log(10.0), 1e-15);
  EXPECT_NEAR(portable_log(1e-300), std::log(1e-300), 1e-12);
  double s = 0, sq = 0;
  Rng g(3);
  for (int i = 0; i < 20000; ++i) {
    const double x = g.normal();
    s += x;
    sq += x * x;
  }
  EXPECT_NEAR(s / 20000, 0.0, 0.03);
  EXPECT_NEAR(sq / 20000, 1.0, 0.03);
}

}  // namespace
}  // namespace lockstep::nn
