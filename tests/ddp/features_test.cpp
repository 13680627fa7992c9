// What users need around the reducer: start-up checks, unused parameters, comm hooks,
// ZeRO-1, Join on uneven inputs, the NaN/Inf guard, the replica hash, the timeline.
#include <gtest/gtest.h>

#include <atomic>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "ddp_test_util.h"
#include "lockstep/core/error.h"
#include "lockstep/ddp/join.h"
#include "lockstep/ddp/powersgd_hook.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/ddp/sync_batch_norm.h"
#include "lockstep/ddp/zero_optimizer.h"
#include "lockstep/nn/layers.h"

namespace lockstep::ddp {
namespace {
using namespace testing;

// Passes its input through and owns a parameter that never gets a gradient.
class Unused : public nn::Module {
 public:
  Unused() { add_parameter("extra", {3}, nn::Init::ones()); }
  const nn::Tensor& forward(const nn::Tensor& x) override { return x; }
  const nn::Tensor& backward(const nn::Tensor& dy) override { return dy; }
  std::string describe() const override { return "Unused"; }
};

std::unique_ptr<nn::Model> model_with_unused(uint64_t seed) {
  auto s = std::make_unique<nn::Sequential>();
  s->emplace<nn::Flatten>().emplace<nn::Linear>(784, 10).emplace<Unused>();
  return std::make_unique<nn::Model>(std::move(s), seed);
}

TEST(Startup, DifferentArchitecturesAreRefusedNamingTheDifference) {
  std::vector<std::string> errors(2);
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = r == 0 ? nn::make_model("fmnist-mlp", 1) : nn::make_model("fmnist-cnn", 1);
    try {
      DistributedDataParallel ddp(*m, pg, {});
    } catch (const ConfigError& e) {
      errors[size_t(r)] = e.what();
    }
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("entry 0"), std::string::npos) << e;
    EXPECT_NE(e.find("1.weight [512, 784]"), std::string::npos) << e;
    EXPECT_NE(e.find("rank 1"), std::string::npos) << e;
  }
}

TEST(Startup, RankZeroParametersAreBroadcast) {
  std::vector<std::vector<float>> p(3);
  run_ranks(3, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 100 + uint64_t(r));
    DistributedDataParallel ddp(*m, pg, {});
    p[size_t(r)] = copy_params(*m);
  });
  auto ref = nn::make_model("fmnist-mlp", 100);
  EXPECT_TRUE(bit_identical(p[1], ref->flat_params()));
  EXPECT_TRUE(bit_identical(p[2], ref->flat_params()));
}

// Two parameters of 3 floats, adjacent in memory or not depending on the rank.
class LayoutSource : public ParamSource {
 public:
  explicit LayoutSource(bool adjacent) : store_(adjacent ? 6 : 12, 0.0f), second_(adjacent ? 3 : 9) {
    for (int i = 0; i < 2; ++i) info_.push_back({"p" + std::to_string(i), {3}, DType::f32});
  }
  size_t num_params() const override { return 2; }
  const TensorInfo& param_info(size_t i) const override { return info_[i]; }
  std::span<float> value(size_t i) override { return {store_.data() + (i ? second_ : 0), 3}; }
  std::span<float> grad(size_t i) override { return value(i); }

 private:
  std::vector<float> store_;
  size_t second_;
  std::vector<TensorInfo> info_;
};

TEST(Startup, BroadcastDoesNotDependOnMemoryLayout) {
  // Rank 0's parameters are apart, rank 1's adjacent: the collectives must still match.
  std::vector<std::vector<float>> got(2);
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    LayoutSource src(r == 1);
    for (size_t i = 0; i < 2; ++i)
      for (size_t k = 0; k < 3; ++k) src.value(i)[k] = r == 0 ? float(10 * i + k) : -1.0f;
    broadcast_state(pg, src, true, true, 0, std::chrono::seconds(10));
    for (size_t i = 0; i < 2; ++i) got[size_t(r)].insert(got[size_t(r)].end(), src.value(i).begin(), src.value(i).end());
  });
  EXPECT_EQ(got[1], (std::vector<float>{0, 1, 2, 10, 11, 12}));
  EXPECT_EQ(got[0], got[1]);
}

// On a shared-memory group the gradients live in ProcessGroup::alloc_shared memory while DDP
// lives (its bucket all-reduces then copy nothing), and return, with their values, to the
// model's own buffer when it goes; shared_gradients = false leaves them where they are.
TEST(Startup, GradientsLiveInSharedMemoryWhileDdpLives) {
  for (bool shared : {true, false})
    run_ranks(2, [&](int, comm::ProcessGroup& pg) {
      ASSERT_TRUE(pg.supports(comm::Capability::shared_memory));
      auto m = nn::make_model("fmnist-mlp", 3);
      const float* own = m->flat_grads().data();
      std::vector<float> last;
      {
        DdpOptions o;
        o.shared_gradients = shared;
        DistributedDataParallel ddp(*m, pg, o);
        EXPECT_EQ(m->flat_grads().data() != own, shared);
        nn::Sgd sgd(*m, {.lr = 0.05f, .momentum = 0.9f});
        nn::CrossEntropyLoss ce;
        for (int step = 0; step < 3; ++step) {
          m->zero_grad();
          ddp_forward_backward(ddp, ce, make_batch(step * 8 + pg.rank() * 4, 4));
          EXPECT_TRUE(ddp.last_result().reduced);
          ddp.step(sgd);
        }
        last.assign(m->flat_grads().begin(), m->flat_grads().end());
        EXPECT_NE(std::count(last.begin(), last.end(), 0.0f), std::ptrdiff_t(last.size()));
        // A re-layout (bucket rebuild) keeps them where they are, each parameter's values kept.
        if (!shared) return;
        const float* at = m->flat_grads().data();
        std::vector<float> first_param(m->parameters()[0]->grad().begin(), m->parameters()[0]->grad().end());
        std::vector<size_t> order(m->parameters().size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;  // forward order: not the initial one
        ASSERT_TRUE(ddp.params().set_grad_order(order));
        ddp.reducer().rebind();
        EXPECT_EQ(m->flat_grads().data(), at);
        EXPECT_TRUE(bit_identical(first_param, m->parameters()[0]->grad()));
        last.assign(m->flat_grads().begin(), m->flat_grads().end());
      }
      EXPECT_EQ(m->flat_grads().data(), own);
      EXPECT_TRUE(bit_identical(last, m->flat_grads()));
    });
}

TEST(Startup, WorldSizeOneIsPlainTraining) {
  std::vector<float> got;
  run_ranks(1, [&](int, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 3);
    DistributedDataParallel ddp(*m, pg, {});
    nn::Sgd sgd(*m, {.lr = 0.05f, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < 5; ++step) {
      m->zero_grad();
      ddp_forward_backward(ddp, ce, make_batch(step * 8, 8));
      EXPECT_FALSE(ddp.last_result().reduced);
      ddp.step(sgd);
    }
    got = copy_params(*m);
  });
  auto ref = nn::make_model("fmnist-mlp", 3);
  nn::Sgd sgd(*ref, {.lr = 0.05f, .momentum = 0.9f});
  nn::CrossEntropyLoss ce;
  for (int step = 0; step < 5; ++step) plain_step(*ref, sgd, ce, make_batch(step * 8, 8));
  EXPECT_TRUE(bit_identical(got, ref->flat_params()));
}

TEST(NoSync, GradScaleAppliesOnTheSynchronisingBackwardAtAnyWorldSize) {
  for (int world : {1, 2}) {
    run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
      auto m = nn::make_model("fmnist-mlp", 3);
      DistributedDataParallel ddp(*m, pg, {});
      ddp.set_grad_scale(0.5f);
      nn::CrossEntropyLoss ce;
      const Batch b = make_batch(0, 4);  // same data on every rank: the average is the local gradient
      m->zero_grad();
      {
        auto guard = ddp.no_sync();
        ddp_forward_backward(ddp, ce, b);
      }
      ddp_forward_backward(ddp, ce, b);  // accumulated 2 g, scaled by 0.5
      auto ref = nn::make_model("fmnist-mlp", 3);  // the same weights, without DDP
      ce.forward(ref->forward(b.x), b.y);
      ref->backward(ce.backward());
      for (size_t i = 0; i < ref->parameters().size(); ++i) {  // per parameter: layouts may differ
        auto got = m->parameters()[i]->grad();
        auto g = ref->parameters()[i]->grad();
        for (size_t k = 0; k < g.size(); ++k) ASSERT_NEAR(got[k], g[k], 1e-6f + 1e-5f * std::fabs(g[k])) << i;
      }
    });
  }
}

TEST(Unused, DefaultIsAnErrorNamingTheParameter) {
  std::vector<std::string> errors(2);
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = model_with_unused(3);
    DistributedDataParallel ddp(*m, pg, {});
    nn::CrossEntropyLoss ce;
    try {
      ddp_forward_backward(ddp, ce, make_batch(r * 4, 4));
    } catch (const InvalidArgument& e) {
      errors[size_t(r)] = e.what();
    }
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("2.extra"), std::string::npos) << e;
    EXPECT_NE(e.find("find_unused_parameters"), std::string::npos) << e;
  }
}

void train_with_unused(DdpOptions opt) {
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = model_with_unused(3);
    DistributedDataParallel ddp(*m, pg, opt);
    nn::Sgd sgd(*m, {.lr = 0.05f, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < 4; ++step) {
      m->zero_grad();
      ddp_forward_backward(ddp, ce, make_batch(step * 8 + r * 4, 4));
      if (step == 0 || opt.reducer.find_unused_parameters) {
        ASSERT_EQ(ddp.last_result().unused, std::vector<size_t>{2});
      } else {
        EXPECT_TRUE(ddp.last_result().unused.empty());  // static graph: marked up front
      }
      ddp.step(sgd);
    }
    auto extra = m->parameter("2.extra").value();
    EXPECT_EQ(std::vector<float>(extra.begin(), extra.end()), std::vector<float>(3, 1.0f));
  });
}

TEST(Unused, FindUnusedParametersReducesThemAsZeros) {
  DdpOptions o;
  o.reducer.find_unused_parameters = true;
  train_with_unused(o);
}

TEST(Unused, StaticGraphMarksTheFirstStepsUnusedSetUpFront) {
  DdpOptions o;
  o.reducer.static_graph = true;
  train_with_unused(o);
}

// Trains fmnist-mlp with a hook; returns (first loss, mean of the last 5 losses) of rank 0.
std::pair<double, double> train_with_hook(const std::function<std::unique_ptr<CommHook>()>& make, int steps = 40) {
  std::vector<float> losses;
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 11);
    DistributedDataParallel ddp(*m, pg, {});
    ddp.set_comm_hook(make());
    nn::Sgd sgd(*m, {.lr = 0.05f, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < steps; ++step) {
      m->zero_grad();
      const float loss = ddp_forward_backward(ddp, ce, make_batch(step * 16 + r * 8, 8));
      ddp.step(sgd);
      if (r == 0) losses.push_back(loss);
    }
    verify_replicas_identical(pg, ddp.params(), steps, std::chrono::seconds(10));
  });
  double tail = 0;
  for (size_t k = losses.size() - 5; k < losses.size(); ++k) tail += losses[k] / 5;
  return {losses.front(), tail};
}

class HookConverges : public ::testing::TestWithParam<const char*> {};

TEST_P(HookConverges, OnFmnistMlp) {
  const std::string name = GetParam();
  auto [first, last] = train_with_hook([&] {
    if (name == "powersgd") return std::unique_ptr<CommHook>(new PowerSgdHook({.rank = 2, .start_iter = 5}));
    return make_comm_hook(name);
  });
  EXPECT_LT(last, 0.25 * first) << name << ": loss " << first << " -> " << last;
}

INSTANTIATE_TEST_SUITE_P(Hooks, HookConverges, ::testing::Values("allreduce", "fp16", "bf16", "powersgd"));

// A user-written hook: sum, then divide by the world size itself.
class SumThenDivide : public CommHook {
 public:
  int launched = 0;
  std::string name() const override { return "sum-then-divide"; }
  Pending launch(GradBucket& b, comm::ProcessGroup& pg) override {
    ++launched;
    auto data = b.data;
    const float inv = 1.0f / float(pg.size());
    return {pg.allreduce(data.data(), data.size(), DType::f32, comm::ReduceOp::sum),
            [data, inv](Millis) {
              for (float& x : data) x *= inv;
            },
            nullptr};
  }
};

TEST(Hooks, UserWrittenHookIsUsed) {
  std::atomic<int> launched = 0;  // the factory runs on every rank's thread
  auto [first, last] = train_with_hook([&] {
    auto h = std::make_unique<SumThenDivide>();
    launched = 1;
    return h;
  });
  EXPECT_EQ(launched, 1);
  EXPECT_LT(last, 0.25 * first);
}

TEST(Hooks, PowerSgdSendsFewerFloats) {
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 11);
    DistributedDataParallel ddp(*m, pg, {});
    auto hook = std::make_unique<PowerSgdHook>(PowerSgdOptions{.rank = 1, .start_iter = 0});
    PowerSgdHook* h = hook.get();
    ddp.set_comm_hook(std::move(hook));
    nn::CrossEntropyLoss ce;
    ddp_forward_backward(ddp, ce, make_batch(r * 8, 8));
    EXPECT_LT(h->wire_floats() * 50, h->plain_floats());
  });
}

TEST(Zero, ZeroOneEqualsPlainDdp) {
  for (int world : {2, 3}) {
    std::vector<std::vector<float>> plain(static_cast<size_t>(world)), zero(static_cast<size_t>(world));
    run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
      auto a = nn::make_model("fmnist-mlp", 5 + uint64_t(r));
      auto b = nn::make_model("fmnist-mlp", 5 + 2 * uint64_t(r));  // rank 0: same start as a
      DistributedDataParallel da(*a, pg, {});
      DdpOptions zo;
      zo.gradient_sync = false;
      DistributedDataParallel db(*b, pg, zo);
      nn::Sgd sgd(*a, {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f});
      ModelParams bp(*b);
      ZeroOptimizer zero_opt(pg, bp, {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f});
      EXPECT_TRUE(zero_opt.zero_copy());
      nn::CrossEntropyLoss ce;
      for (int step = 0; step < 15; ++step) {
        Batch batch = make_batch(step * 8 * world + r * 8, 8);
        a->zero_grad();
        ddp_forward_backward(da, ce, batch);
        da.step(sgd);
        b->zero_grad();
        ddp_forward_backward(db, ce, batch);
        zero_opt.step();
      }
      const ZeroMemoryReport mem = zero_opt.memory();
      EXPECT_EQ(mem.state_bytes_unsharded, size_t(a->num_params()) * 4);
      EXPECT_LE(mem.state_bytes_local, mem.state_bytes_unsharded / size_t(world) + 4 * size_t(world));
      plain[size_t(r)] = copy_params(*a);
      zero[size_t(r)] = copy_params(*b);
    });
    for (int r = 0; r < world; ++r) {
      EXPECT_TRUE(bit_identical(zero[size_t(r)], zero[0])) << "ZeRO replicas differ, rank " << r;
      double worst = 0;
      for (size_t k = 0; k < plain[0].size(); ++k)
        worst = std::max(worst, double(std::fabs(zero[size_t(r)][k] - plain[0][k])));
      EXPECT_LE(worst, 1e-5) << "world " << world;
    }
  }
}

TEST(Join, UnevenInputsFinishWithIdenticalReplicas) {
  const int world = 3;
  std::vector<std::vector<float>> params(world);
  std::vector<int64_t> shadowed(world), steps(world);
  run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 21);
    DdpOptions options;
    options.check_replicas_every = 1;
    DistributedDataParallel ddp(*m, pg, options);
    nn::Sgd sgd(*m, {.lr = 0.05f, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    Join join(ddp);
    const int batches = 3 + 2 * r;  // 3, 5, 7
    for (int step = 0; step < batches; ++step) {
      const int active = join.begin_step();
      EXPECT_EQ(active, step < 3 ? 3 : step < 5 ? 2 : 1);
      m->zero_grad();
      ddp_forward_backward(ddp, ce, make_batch(step * 100 + r * 4, 4));
      ddp.step(sgd);
    }
    shadowed[size_t(r)] = join.finish();
    steps[size_t(r)] = ddp.steps();
    params[size_t(r)] = copy_params(*m);
  }, std::chrono::seconds(20));
  EXPECT_EQ(shadowed, (std::vector<int64_t>{4, 2, 0}));
  EXPECT_TRUE(bit_identical(params[0], params[2]));
  EXPECT_TRUE(bit_identical(params[1], params[2]));
}

TEST(Guard, NonFiniteGradientSkipsTheSameStepOnEveryRank) {
  std::vector<int64_t> skipped(2);
  std::vector<std::vector<float>> params(2);
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 4);
    DistributedDataParallel ddp(*m, pg, {});
    nn::Sgd sgd(*m, {.lr = 0.05f, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < 5; ++step) {
      Batch b = make_batch(step * 8 + r * 4, 4);
      if (step == 2 && r == 1) b.x[5] = std::numeric_limits<float>::quiet_NaN();  // only rank 1 sees it
      m->zero_grad();
      ddp_forward_backward(ddp, ce, b);
      EXPECT_EQ(ddp.last_result().finite, step != 2) << "rank " << r << " step " << step;
      ddp.step(sgd);
    }
    skipped[size_t(r)] = ddp.skipped_steps();
    params[size_t(r)] = copy_params(*m);
  });
  EXPECT_EQ(skipped, (std::vector<int64_t>{1, 1}));
  EXPECT_TRUE(bit_identical(params[0], params[1]));
  for (float v : params[0]) ASSERT_TRUE(std::isfinite(v));
}

TEST(Guard, NonFiniteErrorPolicyStopsEveryRank) {
  std::vector<std::string> errors(2);
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 4);
    DdpOptions o;
    o.reducer.nonfinite = NonFinitePolicy::error;
    DistributedDataParallel ddp(*m, pg, o);
    nn::CrossEntropyLoss ce;
    Batch b = make_batch(r * 4, 4);
    if (r == 0) b.x[0] = std::numeric_limits<float>::infinity();
    try {
      ddp_forward_backward(ddp, ce, b);
    } catch (const Error& e) {
      errors[size_t(r)] = e.what();
    }
  });
  for (const auto& e : errors) EXPECT_NE(e.find("NaN or Inf"), std::string::npos) << e;
}

// Gradients the host must not read (a GPU's: ParamSource::grads_on_host false) stand in
// here as host memory the source says is off the host, and answers nonfinite() for: p1's
// gradient "holds" a NaN the memory does not show. The reducer must ask the source rather
// than scan, refuse a comm hook that computes on the host, and refuse to stage a bucket.
class OffHostSource : public ParamSource {
 public:
  explicit OffHostSource(bool apart = false)
      : grads_(apart ? 12 : 8, 1.0f), second_(apart ? 8 : 4) {
    for (int i = 0; i < 2; ++i) info_.push_back({"p" + std::to_string(i), {4}, DType::f32});
  }
  size_t num_params() const override { return 2; }
  const TensorInfo& param_info(size_t i) const override { return info_[i]; }
  std::span<float> value(size_t i) override { return {values_.data() + 4 * i, 4}; }
  std::span<float> grad(size_t i) override { return {grads_.data() + (i ? second_ : 0), 4}; }
  bool grads_on_host() const override { return false; }
  bool nonfinite(std::span<const std::byte> bytes, DType) const override {
    ++asked;
    const auto* p1 = reinterpret_cast<const std::byte*>(grads_.data() + second_);
    return bytes.data() <= p1 && p1 < bytes.data() + bytes.size();
  }
  mutable int asked = 0;

 private:
  std::vector<float> grads_, values_ = std::vector<float>(8, 0.0f);
  size_t second_;
  std::vector<TensorInfo> info_;
};

// All-reduces without asking the collective to check for NaN/Inf (as nccl does not).
class PlainAverage : public CommHook {
 public:
  std::string name() const override { return "plain"; }
  bool host_memory_only() const override { return false; }
  Pending launch(GradBucket& b, comm::ProcessGroup& pg) override {
    return {pg.allreduce(b.bytes.data(), b.bytes.size() / dtype_size(b.dtype), b.dtype,
                         comm::ReduceOp::avg),
            {},
            nullptr};
  }
};

TEST(OffHost, NonFiniteIsAskedOfTheSourceNotScanned) {
  std::vector<StepResult> got(2);
  std::vector<int> asked(2);
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    OffHostSource src;
    Reducer reducer(pg, src, {});
    reducer.set_comm_hook(std::make_unique<PlainAverage>());
    reducer.mark_ready(1);
    reducer.mark_ready(0);
    got[size_t(r)] = reducer.finalize();
    asked[size_t(r)] = src.asked;
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_FALSE(got[size_t(r)].finite) << "rank " << r << ": the host scan saw only 1.0s";
    EXPECT_EQ(got[size_t(r)].nonfinite_param, "p1") << "rank " << r;
    EXPECT_GE(asked[size_t(r)], 2) << "rank " << r << ": the bucket, then each parameter";
  }
}

TEST(OffHost, HooksThatComputeOnTheHostAreRefused) {
  run_ranks(2, [&](int, comm::ProcessGroup& pg) {
    OffHostSource src;
    Reducer reducer(pg, src, {});
    for (const char* hook : {"fp16", "bf16", "powersgd"}) {
      try {
        reducer.set_comm_hook(make_comm_hook(hook));
        ADD_FAILURE() << hook << " was taken for gradients the host cannot read";
      } catch (const InvalidArgument& e) {
        EXPECT_NE(
            std::string(e.what()).find(str_cat("comm hook '", hook, "' computes on the host")),
            std::string::npos)
            << e.what();
      }
    }
    EXPECT_NO_THROW(reducer.set_comm_hook(make_comm_hook("allreduce")));
  });
}

TEST(OffHost, ABucketThatWouldBeStagedIsRefused) {
  run_ranks(2, [&](int, comm::ProcessGroup& pg) {
    OffHostSource src(/*apart=*/true);  // p0 and p1 do not tile one range: a staged bucket
    EXPECT_THROW(Reducer(pg, src, {}), InternalError);
  });
}

TEST(Guard, ReplicaHashNamesTheFirstDifferingParameter) {
  std::vector<std::string> errors(2);
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-mlp", 4);
    DistributedDataParallel ddp(*m, pg, {});
    if (r == 1) m->parameter("3.bias").value()[7] += 1e-6f;  // silent divergence
    try {
      verify_replicas_identical(pg, ddp.params(), 12, std::chrono::seconds(10));
    } catch (const Error& e) {
      errors[size_t(r)] = e.what();
    }
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("'3.bias'"), std::string::npos) << e;
    EXPECT_NE(e.find("step 12"), std::string::npos) << e;
  }
}

TEST(Timeline, WritesChromeTraceWithBucketsPerRank) {
  const std::string base = ::testing::TempDir() + "ddp_timeline_{rank}.json";
  ::setenv("LOCKSTEP_TIMELINE", base.c_str(), 1);
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto m = nn::make_model("fmnist-cnn", 4);
    DistributedDataParallel ddp(*m, pg, {});
    nn::Sgd sgd(*m, {.lr = 0.01f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < 2; ++step) {
      m->zero_grad();
      ddp_forward_backward(ddp, ce, make_batch(step * 4 + r * 2, 2));
      ddp.step(sgd);
    }
  });
  ::unsetenv("LOCKSTEP_TIMELINE");
  for (int r = 0; r < 2; ++r) {
    const std::string path = Timeline::rank_path(base, r, 2);
    std::ifstream f(path);
    ASSERT_TRUE(f.good()) << path;
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string json = ss.str();
    for (const char* name : {"\"forward\"", "\"backward\"", "\"allreduce b0\"", "\"allreduce b1\"", "\"optimizer\"",
                             "\"traceEvents\""})
      EXPECT_NE(json.find(name), std::string::npos) << name << " missing in " << path;
    // Each bucket event carries its size (lockstep train --profile reads it): over the two
    // steps, twice the model's gradient bytes.
    int64_t bytes = 0;
    for (size_t at = json.find("\"allreduce b"); at != std::string::npos; at = json.find("\"allreduce b", at + 1)) {
      const size_t end = json.find('\n', at), arg = json.find("\"bytes\":", at);
      ASSERT_LT(arg, end) << "a bucket event without its size in " << path;
      bytes += std::stoll(json.substr(arg + 8));
    }
    int64_t numel = 0;
    const auto model = nn::make_model("fmnist-cnn", 4);
    for (const nn::Parameter* p : model->parameters()) numel += p->numel();
    EXPECT_EQ(bytes, 2 * numel * int64_t(sizeof(float))) << path;
    std::remove(path.c_str());
  }
}

// Conv -> norm -> ReLU -> pool -> Linear, with the norm layer given.
std::unique_ptr<nn::Model> bn_model(std::unique_ptr<nn::Module> norm) {
  auto s = std::make_unique<nn::Sequential>();
  s->emplace<nn::Conv2d>(1, 4, 3, 1, 1).add(std::move(norm));
  s->emplace<nn::ReLU>().emplace<nn::MaxPool2d>(2).emplace<nn::Flatten>().emplace<nn::Linear>(784, 10);
  return std::make_unique<nn::Model>(std::move(s), 17);
}

TEST(SyncBatchNorm, EqualsBatchNormOnTheConcatenatedBatch) {
  const int world = 2, steps = 8;
  const int64_t batch = 4;
  // Step by step from DDP's parameters and statistics (OneProcessCheck says why). The widest
  // batch reductions are two of B x 784 terms (the conv's weight gradient, the norm's
  // statistics); per sample, the conv sums 9 terms and the linear layer 784.
  OneProcessCheck check(bn_model(std::make_unique<nn::BatchNorm2d>(4)), world, batch, 2 * 784, 9 + 784,
                        /*samples_interact=*/true);
  std::vector<std::vector<float>> params(world);
  run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
    auto m = bn_model(std::make_unique<SyncBatchNorm>(4, pg));
    DistributedDataParallel ddp(*m, pg, {});
    nn::Sgd sgd(*m, {.lr = 0.05f, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < steps; ++step) {
      auto b = m->flat_buffers();
      const std::vector<float> buffers_before(b.begin(), b.end());
      m->zero_grad();
      ddp_forward_backward(ddp, ce, make_batch(step * world * batch + r * batch, batch));
      if (r == 0) check.check(step, *m, make_batch(step * world * batch, world * batch), 1, buffers_before);
      ddp.step(sgd);
    }
    params[size_t(r)] = copy_params(*m);
  });
  EXPECT_TRUE(bit_identical(params[0], params[1]));
  EXPECT_LT(check.worst(), 1.0);
}

// Buffers (BatchNorm's running statistics) are rank 0's before every forward by default, so
// ranks that trained on different data evaluate with the same statistics. Without the
// broadcast each rank keeps the statistics of its own shard.
TEST(Buffers, RankZerosRunningStatsReachEveryRankBeforeEachForward) {
  const int world = 2, steps = 3;
  const int64_t batch = 4;
  for (const bool broadcast : {true, false}) {
    std::vector<std::vector<float>> initial(world), buffers(world);
    run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
      auto m = bn_model(std::make_unique<nn::BatchNorm2d>(4));
      auto b0 = m->flat_buffers();
      initial[size_t(r)] = {b0.begin(), b0.end()};
      DdpOptions options;
      options.broadcast_buffers = broadcast;
      DistributedDataParallel ddp(*m, pg, options);
      nn::Sgd sgd(*m, {.lr = 0.05f});
      nn::CrossEntropyLoss ce;
      for (int step = 0; step < steps; ++step) {
        m->zero_grad();
        ddp_forward_backward(ddp, ce, make_batch(step * world * batch + r * batch, batch));
        ddp.step(sgd);
      }
      m->eval();  // an evaluation forward takes rank 0's statistics and changes none
      ddp.forward(make_batch(0, batch).x);
      auto b = m->flat_buffers();
      buffers[size_t(r)] = {b.begin(), b.end()};
    });
    SCOPED_TRACE(broadcast ? "broadcast_buffers = true" : "broadcast_buffers = false");
    EXPECT_FALSE(bit_identical(buffers[0], initial[0])) << "the running statistics never moved";
    EXPECT_EQ(bit_identical(buffers[0], buffers[1]), broadcast);
  }
}

}  // namespace
}  // namespace lockstep::ddp
