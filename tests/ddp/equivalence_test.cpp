// DDP against one process on the concatenated batch (the definition of correct data
// parallelism), replicas bit-identical after every step, no_sync accumulation, bucket
// rebuild with gradient re-layout, deterministic mode, and the start-up checks.
#include <gtest/gtest.h>

#include "ddp_test_util.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/nn/layers.h"

namespace lockstep::ddp {
namespace {
using namespace testing;

struct RunResult {
  std::vector<double> loss;                 // mean over ranks, per step
  std::vector<std::vector<uint64_t>> hash;  // [rank][step] parameter hash
  std::vector<std::vector<float>> params;   // [rank] final flat parameters
  std::vector<ReducerStats> stats;
};

struct RunSpec {
  std::string model = "fmnist-mlp";
  int world = 2;
  int64_t batch = 8;  // per worker
  int steps = 50;
  DdpOptions opt;
  float lr = 0.05f;
};

// Called on rank 0 after each step's backward, before the optimizer step: the model holds
// the parameters the step started from and the averaged gradients.
using StepObserver = std::function<void(int step, nn::Model& m)>;

RunResult run_ddp(const RunSpec& s, const StepObserver& observe = {}) {
  RunResult out;
  std::vector<std::vector<float>> loss(size_t(s.world), std::vector<float>(size_t(s.steps)));
  out.hash.resize(size_t(s.world));
  out.params.resize(size_t(s.world));
  out.stats.resize(size_t(s.world));
  run_ranks(s.world, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model(s.model, 7 + uint64_t(r));  // different seeds: DDP must copy rank 0's
    DistributedDataParallel ddp(*m, pg, s.opt);
    nn::Sgd opt(*m, {.lr = s.lr, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < s.steps; ++step) {
      Batch b = make_batch(int64_t(step) * s.world * s.batch + r * s.batch, s.batch);
      m->zero_grad();
      loss[size_t(r)][size_t(step)] = ddp_forward_backward(ddp, ce, b);
      if (r == 0 && observe) observe(step, *m);
      ddp.step(opt);
      auto f = m->flat_params();
      out.hash[size_t(r)].push_back(hash_bytes(f.data(), f.size_bytes()));
    }
    out.params[size_t(r)] = copy_params(*m);
    out.stats[size_t(r)] = ddp.reducer().stats();
  });
  for (int step = 0; step < s.steps; ++step) {
    double sum = 0;
    for (int r = 0; r < s.world; ++r) sum += loss[size_t(r)][size_t(step)];
    out.loss.push_back(sum / s.world);
  }
  return out;
}

void expect_replicas_identical(const RunResult& r) {
  for (size_t rank = 1; rank < r.hash.size(); ++rank) {
    for (size_t step = 0; step < r.hash[0].size(); ++step)
      ASSERT_EQ(r.hash[rank][step], r.hash[0][step]) << "rank " << rank << " differs from rank 0 after step " << step;
    EXPECT_TRUE(bit_identical(r.params[rank], r.params[0]));
  }
}

// Runs `s` under DDP and checks steps against one process from the same parameters: the
// first three (the buckets are rebuilt after the first) and every fourth after them.
RunResult run_checked(const RunSpec& s) {
  OneProcessCheck check(s.model, s.world, s.batch);
  const int64_t B = s.world * s.batch;
  RunResult r = run_ddp(s, [&](int step, nn::Model& m) {
    if (step < 3 || step % 4 == 3) check.check(step, m, make_batch(step * B, B));
  });
  ::testing::Test::RecordProperty("worst_error_over_bound", std::to_string(check.worst()));
  EXPECT_LT(check.worst(), 1.0);
  EXPECT_LT(r.loss.back(), r.loss.front());  // it trained
  return r;
}

struct EqCase {
  const char* model;
  int world;
  nn::ConvImpl conv = nn::ConvImpl::kIm2col;
};

class Equivalence : public ::testing::TestWithParam<EqCase> {};

TEST_P(Equivalence, MatchesOneWorkerOnConcatenatedBatch) {
  const EqCase c = GetParam();
  if (c.conv == nn::ConvImpl::kDnnl && !nn::have_dnnl_conv()) GTEST_SKIP() << "built without oneDNN";
  nn::ScopedConvImpl use(c.conv);  // the convolution the CNN runs on (both when built with oneDNN)
  RunSpec s;
  s.model = c.model;
  s.world = c.world;
  s.batch = s.model == "fmnist-cnn" ? 4 : 8;
  // Each step is checked from DDP's own parameters, so the rate only has to train.
  s.lr = s.model == "fmnist-cnn" ? 0.01f : 0.05f;
  RunResult r = run_checked(s);
  expect_replicas_identical(r);
}

INSTANTIATE_TEST_SUITE_P(
    Models, Equivalence,
    ::testing::Values(EqCase{"fmnist-mlp", 2}, EqCase{"fmnist-mlp", 3}, EqCase{"fmnist-mlp", 4},
                      EqCase{"fmnist-cnn", 2}, EqCase{"fmnist-cnn", 3}, EqCase{"fmnist-cnn", 4},
                      EqCase{"fmnist-cnn", 2, nn::ConvImpl::kDnnl}, EqCase{"fmnist-cnn", 3, nn::ConvImpl::kDnnl},
                      EqCase{"fmnist-cnn", 4, nn::ConvImpl::kDnnl}),
    [](const auto& info) {
      std::string n = info.param.model;
      return n.substr(7) + "_w" + std::to_string(info.param.world) +
             (info.param.conv == nn::ConvImpl::kDnnl ? "_onednn" : "");
    });

TEST(Equivalence, TinyBucketsRebuildAndRelayoutGradients) {
  // MLP gradients become ready as w3 b3 w2 b2 w1 b1 (Linear marks weight before bias) but
  // are laid out b3 w3 b2 w2 b1 b1. These caps make the rebuilt buckets {w3} {b3, w2} {b2}
  // {w1} {b1}: b3 and w2 are not adjacent, so the gradients must be re-laid out.
  RunSpec s;
  s.steps = 12;
  s.opt.reducer.buckets = {.bucket_cap_bytes = 44, .first_bucket_bytes = 1};
  RunResult r = run_checked(s);
  expect_replicas_identical(r);
  EXPECT_EQ(r.stats[0].rebuilds, 1);
  EXPECT_EQ(r.stats[0].relayouts, 1);
}

TEST(Equivalence, OverlapOffGivesTheSameParameters) {
  RunSpec s;
  s.steps = 10;
  RunResult on = run_ddp(s);
  s.opt.reducer.overlap = false;
  RunResult off = run_ddp(s);
  EXPECT_TRUE(bit_identical(on.params[0], off.params[0]));
}

TEST(Equivalence, DeterministicModeIsBitwiseReproducible) {
  RunSpec s;
  s.steps = 10;
  s.opt.deterministic = true;
  s.opt.reducer.buckets = {.bucket_cap_bytes = 100000, .first_bucket_bytes = 1000};
  RunResult a = run_ddp(s);
  RunResult b = run_ddp(s);
  EXPECT_TRUE(bit_identical(a.params[0], b.params[0]));
  EXPECT_EQ(a.stats[0].rebuilds, 0);
}

TEST(NoSync, AccumulationEqualsTheLargeBatch) {
  const int world = 2, micro = 3, steps = 15;
  const int64_t batch = 4;
  const float lr = 0.05f;
  std::vector<std::vector<float>> params(world);
  OneProcessCheck check("fmnist-mlp", world, micro * batch);
  run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 7);
    DistributedDataParallel ddp(*m, pg, {});
    // Accumulated gradients are the sum of `micro` means: lr / micro gives the mean.
    nn::Sgd opt(*m, {.lr = lr / micro, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < steps; ++step) {
      m->zero_grad();
      const int64_t base = int64_t(step) * world * micro * batch + int64_t(r) * micro * batch;
      {
        auto guard = ddp.no_sync();
        for (int k = 0; k < micro - 1; ++k) {
          ddp_forward_backward(ddp, ce, make_batch(base + k * batch, batch));
          EXPECT_FALSE(ddp.last_result().reduced);
        }
      }
      ddp_forward_backward(ddp, ce, make_batch(base + (micro - 1) * batch, batch));
      EXPECT_TRUE(ddp.last_result().reduced);
      // The accumulated gradient is `micro` times the mean over the whole global batch.
      const int64_t global = int64_t(world) * micro * batch;
      if (r == 0) check.check(step, *m, make_batch(int64_t(step) * global, global), float(micro));
      ddp.step(opt);
    }
    params[size_t(r)] = copy_params(*m);
  });
  EXPECT_TRUE(bit_identical(params[0], params[1]));
  EXPECT_LT(check.worst(), 1.0);
  EXPECT_LT(check.loss().back(), check.loss().front());  // it trained
}

}  // namespace
}  // namespace lockstep::ddp
