// DDP pieces against references computed by hand, with tolerances from the arithmetic: each
// comm hook's average against the plain all-reduce's, Join's scaling in both settings, ZeRO-1's
// slices (sizes not divisible by the world size) and the replica check's last rank.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "ddp_test_util.h"
#include "lockstep/core/error.h"
#include "lockstep/ddp/join.h"
#include "lockstep/ddp/powersgd_hook.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/ddp/zero_optimizer.h"
#include "lockstep/nn/layers.h"

namespace lockstep::ddp {
namespace {
using namespace testing;

constexpr double kF32 = 0x1p-24;  // unit roundoff of float32 (round to nearest)
constexpr auto kWait = std::chrono::seconds(20);

// Parameters of given shapes over flat float storage. Contiguous: values and gradients tile
// one range each with equal offsets (ZeRO's zero-copy case). Otherwise a gap after every value
// and gradients in reverse parameter order (ZeRO stages through a copy).
class ShapedSource : public ParamSource {
 public:
  ShapedSource(std::vector<std::vector<int64_t>> shapes, bool contiguous) {
    size_t vo = 0, go = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      info_.push_back({"p" + std::to_string(i), shapes[i], DType::f32});
      numel_.push_back(info_.back().numel());
    }
    for (size_t i = 0; i < shapes.size(); ++i) {
      voff_.push_back(vo);
      vo += numel_[i] + (contiguous ? 0 : 1);
    }
    goff_.resize(shapes.size());
    for (size_t k = 0; k < shapes.size(); ++k) {
      const size_t i = contiguous ? k : shapes.size() - 1 - k;
      goff_[i] = go;
      go += numel_[i];
    }
    values_.assign(vo + 1, 0.0f);
    grads_.assign(go + 1, 0.0f);
  }
  size_t num_params() const override { return info_.size(); }
  const TensorInfo& param_info(size_t i) const override { return info_[i]; }
  std::span<float> value(size_t i) override { return {values_.data() + voff_[i], numel_[i]}; }
  std::span<float> grad(size_t i) override { return {grads_.data() + goff_[i], numel_[i]}; }
  size_t total() const { return std::accumulate(numel_.begin(), numel_.end(), size_t(0)); }
  // Element k of the parameters taken in index order (ZeroOptimizer's flat order here).
  float& value_at(size_t k) { return at(values_, voff_, k); }
  float& grad_at(size_t k) { return at(grads_, goff_, k); }

 private:
  float& at(std::vector<float>& v, const std::vector<size_t>& off, size_t k) {
    size_t i = 0;
    while (k >= numel_[i]) k -= numel_[i++];
    return v[off[i] + k];
  }
  std::vector<TensorInfo> info_;
  std::vector<size_t> numel_, voff_, goff_;
  std::vector<float> values_, grads_;
};

// Runs one bucket through `hook` as the reducer does: launch, wait, finish.
void run_hook(CommHook& hook, GradBucket& b, comm::ProcessGroup& pg) {
  Pending p = hook.launch(b, pg);
  if (p.work.valid()) p.work.wait(kWait);
  if (p.finish) p.finish(std::chrono::duration_cast<Millis>(kWait));
}

// Rank r's gradient element i: |g| in [1/16, 4), both signs; no float16 subnormals after / W.
float grad_value(int r, size_t i) {
  const uint32_t h = mix(uint64_t(r) * 1000003ull + i);
  const float mag = 0.0625f + float(h % 4000) / 1024.0f;
  return (h >> 20) & 1 ? mag : -mag;
}

// fp16 and bf16: rank r's values, pre-divided by W, rounded to the wire format; W - 1 additions
// in it, each rounded; the division by W in float32. Each of these 2W roundings errs by at
// most u times a value bounded by sum_r |g_r| / W (first order), so
//   |hook - exact average| <= 2W u sum_r |g_r| / W,  u = 2^-11 (fp16), 2^-8 (bf16).
// The plain all-reduce itself is within W 2^-24 sum_r |g_r| / W of the exact average.
TEST(HookReference, CompressedAverageEqualsThePlainAllreduceWithinTheFormatsPrecision) {
  const size_t n = 1031;  // odd: covers vector tails of the conversion loops
  for (int world : {2, 3, 4}) {
    run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
      std::vector<double> exact(n), abs_sum(n);
      for (size_t i = 0; i < n; ++i)
        for (int q = 0; q < world; ++q) {
          exact[i] += double(grad_value(q, i)) / world;
          abs_sum[i] += std::fabs(double(grad_value(q, i))) / world;
        }
      std::vector<float> plain(n);
      for (size_t i = 0; i < n; ++i) plain[i] = grad_value(r, i);
      GradBucket pb{.data = plain, .params = {}, .offsets = {}};
      AllreduceHook allreduce;
      run_hook(allreduce, pb, pg);
      size_t bad = 0;
      for (size_t i = 0; i < n; ++i)
        if (!(std::fabs(plain[i] - exact[i]) <= world * kF32 * abs_sum[i]) && bad++ == 0)
          ADD_FAILURE() << "allreduce, world " << world << ", element " << i;
      for (const char* name : {"fp16", "bf16"}) {
        const double u = std::string(name) == "fp16" ? 0x1p-11 : 0x1p-8;
        auto hook = make_comm_hook(name);
        bad = 0;
        std::vector<float> data(n);
        for (size_t i = 0; i < n; ++i) data[i] = grad_value(r, i);
        GradBucket b{.data = data, .params = {}, .offsets = {}};
        run_hook(*hook, b, pg);
        for (size_t i = 0; i < n; ++i)
          if (!(std::fabs(double(data[i]) - plain[i]) <=
                (2 * world * u + world * kF32) * abs_sum[i]) &&
              bad++ == 0)
            ADD_FAILURE() << name << ", world " << world << ", rank " << r << ", element " << i
                          << ": " << data[i] << " against the plain all-reduce's " << plain[i];
      }
    });
  }
}

// PowerSGD is exact when the averaged gradient's rank is at most its rank r. Rank 1 here:
// each rank's weight gradient is c_r x e_k^T (a Linear layer whose inputs are one-hot on
// feature k), c_r > 0, so no step cancels: P = avg(c) x q_k (W products summed), Q = M^T P
// (n products, non-negative, zero outside column k), grad = P Q^T. Each of the ~2(n + W) + 8
// roundings errs by at most 2^-24 relative, so grad equals the plain average within
// (2(n + W) + 8) 2^-24 |M_avg| element by element, and exactly 0 outside column k. (The 1e-8
// the orthonormalisation adds to ||P|| ~ 4000 |q_k| stays below 2^-24 ||P|| for |q_k| > 1e-4.)
// The bias goes uncompressed: the plain all-reduce's bound.
TEST(HookReference, PowerSgdEqualsThePlainAllreduceWhenTheGradientHasItsRank) {
  const int64_t rows = 16, cols = 12, k = 5;
  for (int world : {2, 3}) {
    run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
      ShapedSource src({{rows, cols}, {rows}}, true);
      const size_t nw = size_t(rows * cols), nb = size_t(rows);
      std::vector<float> data(nw + nb, 0.0f);
      auto c = [](int q) { return 0.5f + 0.25f * float(q); };
      auto x = [](int64_t i) {
        return 1024.0f * (float(i % 7 - 3) + 0.5f);
      };  // both signs, never 0
      for (int64_t i = 0; i < rows; ++i) data[size_t(i * cols + k)] = c(r) * x(i);
      for (size_t i = 0; i < nb; ++i) data[nw + i] = grad_value(r, i);
      const std::vector<size_t> params = {0, 1}, offsets = {0, nw};
      GradBucket b{
          .data = data, .params = params, .offsets = offsets, .source = &src, .iteration = 0};
      PowerSgdHook hook({.rank = 1, .start_iter = 0});
      run_hook(hook, b, pg);
      EXPECT_LT(hook.wire_floats(), hook.plain_floats()) << "the weight was not compressed";
      double c_avg = 0;
      for (int q = 0; q < world; ++q) c_avg += c(q) / world;
      const double tol = (2.0 * (rows + world) + 8) * kF32;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
          const double want = j == k ? c_avg * x(i) : 0.0;
          EXPECT_LE(std::fabs(data[size_t(i * cols + j)] - want), tol * std::fabs(want))
              << "world " << world << ", rank " << r << ", weight [" << i << ", " << j << "]";
        }
      for (size_t i = 0; i < nb; ++i) {
        double exact = 0, abs_sum = 0;
        for (int q = 0; q < world; ++q) {
          exact += double(grad_value(q, i)) / world;
          abs_sum += std::fabs(double(grad_value(q, i))) / world;
        }
        EXPECT_LE(std::fabs(data[nw + i] - exact), world * kF32 * abs_sum) << "bias " << i;
      }
    });
  }
}

// Linear(3 -> 1) fed one sample x with upstream gradient 1: the weight's gradient is x, the
// bias's 1. Rank r holds r + 1 batches, so step s has W - s ranks active and the joined ones
// contribute zeros. Plain SGD from zero weights ends, on every rank, at
//   w = -lr sum_s c_s sum_{r >= s} g_{r,s},  c_s = 1/W (divide_by_initial_world_size) or 1/(W - s).
// A few float32 roundings per term: within 16 2^-24 of the sum of the terms' magnitudes.
TEST(JoinReference, GradientsAreDividedByTheInitialOrTheActiveWorldSize) {
  const int world = 3;
  const float lr = 0.25f;
  auto x = [](int r, int s) {
    return std::vector<float>{float(1 + r), float(2 * s + 1), float(r * s) - 1.5f};
  };
  for (const bool initial : {true, false}) {
    std::vector<std::vector<float>> got(world);
    run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
      auto seq = std::make_unique<nn::Sequential>();
      seq->emplace<nn::Linear>(3, 1);
      nn::Model m(std::move(seq), 1);
      for (float& v : m.flat_params()) v = 0.0f;
      DistributedDataParallel ddp(m, pg, {});
      nn::Sgd sgd(m, {.lr = lr});
      Join join(ddp, {.divide_by_initial_world_size = initial});
      for (int s = 0; s <= r; ++s) {
        EXPECT_EQ(join.begin_step(), world - s);
        m.zero_grad();
        nn::Tensor in({1, 3}), dy({1, 1});
        for (int j = 0; j < 3; ++j) in[j] = x(r, s)[size_t(j)];
        dy[0] = 1.0f;
        ddp.forward(in);
        ddp.backward(dy);
        ddp.step(sgd);
      }
      join.finish();
      auto w = m.parameters()[0]->value();
      got[size_t(r)] = {w[0], w[1], w[2], m.parameters()[1]->value()[0]};
    });
    std::vector<double> want(4, 0.0), mag(4, 0.0);
    for (int s = 0; s < world; ++s) {
      const double c = initial ? 1.0 / world : 1.0 / (world - s);
      for (int r = s; r < world; ++r)
        for (size_t j = 0; j < 4; ++j) {
          const double g = j < 3 ? x(r, s)[j] : 1.0;
          want[j] -= lr * c * g;
          mag[j] += std::fabs(lr * c * g);
        }
    }
    for (int r = 0; r < world; ++r)
      for (size_t j = 0; j < 4; ++j)
        EXPECT_LE(std::fabs(got[size_t(r)][j] - want[j]), 16 * kF32 * mag[j])
            << "divide_by_initial_world_size = " << initial << ", rank " << r
            << ", parameter element " << j << ": " << got[size_t(r)][j] << ", hand-computed "
            << want[j];
  }
}

// Every rank's slice [r N/W, (r+1) N/W) and the shared tail [W (N/W), N) together hold each of
// the N elements exactly once, for N not divisible by W (23) and N < W (3), zero copy and
// staged; two SGD steps with momentum then match the hand-computed update of every element,
// on every rank, and each held momentum element its hand-computed value. The gradients are
// small multiples of 1/4, so their averages are exact up to the all-reduce's division (one
// rounding); each element then takes a few float32 roundings of magnitude at most |w0| + the
// sizes of the updates: 16 2^-24 of that bounds them.
TEST(ZeroReference, SlicesHoldEveryElementOnceAndUpdateItForWorldsOneToFive) {
  const float lr = 0.25f, mu = 0.5f;
  auto grad = [](size_t k, int r, int s) { return float(k + 1) * float(r + 1 + s) / 4.0f; };
  for (const auto& shapes : {std::vector<std::vector<int64_t>>{{5}, {1}, {7}, {3}, {7}},
                             std::vector<std::vector<int64_t>>{{2}, {1}}})
    for (int world = 1; world <= 5; ++world)
      for (const bool contiguous : {true, false}) {
        SCOPED_TRACE(str_cat("world ", world, ", ", contiguous ? "zero copy" : "staged", ", ",
                             shapes.size(), " parameters"));
        const size_t n = ShapedSource(shapes, true).total(), shard = n / size_t(world);
        std::vector<FlatRange> slices(static_cast<size_t>(world)),
            tails(static_cast<size_t>(world));
        std::vector<std::vector<float>> values(static_cast<size_t>(world));
        std::vector<std::vector<float>> momentum(static_cast<size_t>(world),
                                                 std::vector<float>(n, NAN));
        run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
          ShapedSource src(shapes, contiguous);
          for (size_t k = 0; k < n; ++k) src.value_at(k) = 1.0f + float(k) / 8.0f;
          ZeroOptimizer zero(pg, src, {.lr = lr, .momentum = mu});
          EXPECT_EQ(zero.zero_copy(), contiguous);
          for (int s = 0; s < 2; ++s) {
            for (size_t k = 0; k < n; ++k) src.grad_at(k) = grad(k, r, s);
            EXPECT_TRUE(zero.step());
          }
          slices[size_t(r)] = zero.state_range();
          tails[size_t(r)] = zero.tail_range();
          for (size_t k = 0; k < n; ++k) {
            values[size_t(r)].push_back(src.value_at(k));
            const bool held = (k >= slices[size_t(r)].begin && k < slices[size_t(r)].end) ||
                              k >= tails[size_t(r)].begin;
            if (held) momentum[size_t(r)][k] = zero.state({k, k + 1})[0];
          }
        });
        for (int r = 0; r < world; ++r) {
          EXPECT_EQ(slices[size_t(r)], (FlatRange{size_t(r) * shard, size_t(r + 1) * shard}))
              << "rank " << r;
          EXPECT_EQ(tails[size_t(r)], (FlatRange{size_t(world) * shard, n})) << "rank " << r;
        }
        for (size_t k = 0; k < n; ++k) {
          int holders = k >= tails[0].begin && k < tails[0].end ? 1 : 0;
          for (const FlatRange& s : slices) holders += k >= s.begin && k < s.end ? 1 : 0;
          EXPECT_EQ(holders, 1) << "element " << k << " of " << n;
          double avg[2];
          for (int s = 0; s < 2; ++s) avg[s] = double(k + 1) * (world + 1 + 2 * s) / 8.0;
          const double w0 = 1.0 + k / 8.0, b1 = avg[0], b2 = mu * b1 + avg[1],
                       w2 = w0 - lr * b1 - lr * b2;
          const double tol = 16 * kF32 * (w0 + lr * (b1 + b2) + b2);
          for (int r = 0; r < world; ++r) {
            EXPECT_NEAR(values[size_t(r)][k], w2, tol) << "rank " << r << ", element " << k;
            const float m = momentum[size_t(r)][k];
            if (!std::isnan(m)) {
              EXPECT_NEAR(m, b2, tol) << "momentum, rank " << r << ", element " << k;
            }
          }
        }
      }
}

// The check compares every rank with rank 0; a one-ulp divergence on the LAST rank only, or on
// rank 0 only, is caught on every rank, naming the parameter, the step and exactly the ranks
// that disagree with rank 0.
TEST(ReplicaReference, ADivergenceOnTheLastRankOrRankZeroIsNamedOnEveryRank) {
  for (int world : {3, 4})
    for (const int odd : {world - 1, 0}) {
      std::vector<std::string> errors(static_cast<size_t>(world));
      run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
        ShapedSource src({{4, 3}, {5}, {2}}, true);
        for (size_t k = 0; k < src.total(); ++k) src.value_at(k) = float(k) * 0.5f;
        verify_replicas_identical(pg, src, 6, kWait);  // identical: passes
        if (r == odd) src.value(2)[1] = std::nextafter(src.value(2)[1], 10.0f);
        try {
          verify_replicas_identical(pg, src, 7, kWait);
        } catch (const Error& e) {
          errors[size_t(r)] = e.what();
        }
      });
      std::string others;
      for (int q = 1; q < world; ++q) others += (others.empty() ? "" : ", ") + std::to_string(q);
      const std::string named = "rank(s) " + (odd == 0 ? others : std::to_string(odd)) + " (";
      for (int r = 0; r < world; ++r) {
        SCOPED_TRACE(str_cat("world ", world, ", divergent rank ", odd, ", seen from rank ", r));
        EXPECT_NE(errors[size_t(r)].find("'p2'"), std::string::npos) << errors[size_t(r)];
        EXPECT_NE(errors[size_t(r)].find("step 7"), std::string::npos) << errors[size_t(r)];
        EXPECT_NE(errors[size_t(r)].find(named), std::string::npos)
            << "expected '" << named << "' in: " << errors[size_t(r)];
      }
    }
}

}  // namespace
}  // namespace lockstep::ddp
