// Slow: trains fmnist-cnn on Fashion-MNIST, single process, and requires >= 90% test accuracy
// after 3 epochs. SGD momentum 0.9, batch 64, linear warm-up
// then cosine decay, a fresh shuffle per epoch from the seeded RNG.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "fmnist_idx.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/nn/optim.h"
#include "lockstep/nn/rng.h"

namespace lockstep::nn {
namespace {

double accuracy(Model& m, const testing::FashionMnist& d) {
  m.eval();
  constexpr int64_t kBatch = 500;
  Tensor x({kBatch, 1, 28, 28});
  std::vector<int32_t> pred(kBatch);
  int64_t correct = 0;
  for (int64_t s = 0; s + kBatch <= d.count; s += kBatch) {
    std::memcpy(x.data(), d.images.data() + s * 784, size_t(kBatch * 784) * sizeof(float));
    argmax_rows(m.forward(x), pred);
    for (int64_t i = 0; i < kBatch; ++i) correct += pred[size_t(i)] == d.labels[size_t(s + i)];
  }
  m.train();
  return double(correct) / double(d.count - d.count % kBatch);
}

TEST(TrainFashionMnist, CnnReaches90PercentWithin3Epochs) {
  const auto train = testing::load_fashion_mnist(testing::kFashionMnistDir, "train");
  const auto test = testing::load_fashion_mnist(testing::kFashionMnistDir, "t10k");
  constexpr int64_t kBatch = 64, kEpochs = 3;
  const int64_t steps_per_epoch = train.count / kBatch;
  auto model = make_model("fmnist-cnn", 1);
  Sgd opt(*model, {.lr = 0.05f, .momentum = 0.9f});
  WarmupLr sched(std::make_unique<CosineLr>(0.05f, kEpochs * steps_per_epoch - 200), 200);
  CrossEntropyLoss ce;
  Tensor x({kBatch, 1, 28, 28});
  std::vector<int32_t> y(kBatch);
  std::vector<int64_t> order(size_t(train.count));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(2024);
  int64_t step = 0;
  double acc = 0.0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t epoch = 1; epoch <= kEpochs; ++epoch) {
    for (int64_t i = int64_t(order.size()) - 1; i > 0; --i)  // Fisher-Yates
      std::swap(order[size_t(i)], order[rng.next_u32() % uint32_t(i + 1)]);
    double loss_sum = 0.0;
    for (int64_t s = 0; s < steps_per_epoch; ++s, ++step) {
      for (int64_t b = 0; b < kBatch; ++b) {
        const int64_t idx = order[size_t(s * kBatch + b)];
        std::memcpy(x.data() + b * 784, train.images.data() + idx * 784, 784 * sizeof(float));
        y[size_t(b)] = train.labels[size_t(idx)];
      }
      model->zero_grad();
      loss_sum += ce.forward(model->forward(x), y);
      model->backward(ce.backward());
      opt.set_lr(sched.lr(step));
      opt.step();
    }
    acc = accuracy(*model, test);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("epoch %lld: train loss %.4f, test accuracy %.2f%% (%.0f s)\n", (long long)epoch,
                loss_sum / double(steps_per_epoch), 100.0 * acc, secs);
    std::fflush(stdout);
  }
  EXPECT_GE(acc, 0.90);
}

}  // namespace
}  // namespace lockstep::nn
