// Helpers for DDP tests: ranks as threads of one process over the real native backend
// (HashStore rendezvous), deterministic synthetic Fashion-MNIST-shaped data, one training
// step, and parameter comparisons.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "lockstep/comm/process_group.h"
#include "lockstep/ddp/ddp.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/nn/optim.h"
#include "lockstep/store/hash_store.h"

namespace lockstep::ddp::testing {

// Runs fn(rank, pg) on `world` threads. When one rank throws, the others' groups are
// aborted so that nothing waits for the timeout; the first error is rethrown.
inline void run_ranks(int world, const std::function<void(int, comm::ProcessGroup&)>& fn,
                      std::chrono::seconds timeout = std::chrono::seconds(30)) {
  store::HashStore store;
  std::mutex mu;
  std::exception_ptr first;
  std::vector<comm::ProcessGroup*> groups(size_t(world), nullptr);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        comm::Options o;
        o.timeout = timeout;
        auto pg = comm::ProcessGroup::create("native", store, r, world, o);
        {
          std::lock_guard<std::mutex> lk(mu);
          groups[size_t(r)] = pg.get();
        }
        try {
          fn(r, *pg);
        } catch (...) {
          std::lock_guard<std::mutex> lk(mu);
          if (!first) first = std::current_exception();
          for (auto* g : groups)
            if (g && g != pg.get()) g->abort();
        }
        std::lock_guard<std::mutex> lk(mu);
        groups[size_t(r)] = nullptr;
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!first) first = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

inline uint32_t mix(uint64_t x) {
  x = (x ^ (x >> 33)) * 0xff51afd7ed558ccdull;
  x = (x ^ (x >> 33)) * 0xc4ceb9fe1a85ec53ull;
  return uint32_t(x ^ (x >> 33));
}

struct Batch {
  nn::Tensor x;
  std::vector<int32_t> y;
};

// Samples [first, first + n) of a fixed synthetic set shaped like Fashion-MNIST: noise in
// [0, 0.5) plus a bright 7x7 block whose place encodes the label (easy to learn, so
// training is smooth and runs can be compared step by step).
inline Batch make_batch(int64_t first, int64_t n) {
  Batch b{nn::Tensor({n, 1, 28, 28}), std::vector<int32_t>(size_t(n))};
  for (int64_t s = 0; s < n; ++s) {
    const uint64_t id = uint64_t(first + s);
    const int32_t label = int32_t(mix(id * 7919ull) % 10);
    float* img = b.x.data() + s * 784;
    for (int64_t p = 0; p < 784; ++p) img[p] = float(mix(id * 1000003ull + uint64_t(p)) >> 8) * 0x1p-25f;
    const int64_t r0 = (label / 4) * 7 + 3, c0 = (label % 4) * 7;
    for (int64_t r = r0; r < r0 + 7; ++r)
      for (int64_t c = c0; c < c0 + 7; ++c) img[r * 28 + c] += 0.5f;
    b.y[size_t(s)] = label;
  }
  return b;
}

// Rows [begin, end) of a batch.
inline Batch slice(const Batch& b, int64_t begin, int64_t end) {
  Batch out{nn::Tensor({end - begin, 1, 28, 28}), {b.y.begin() + begin, b.y.begin() + end}};
  std::memcpy(out.x.data(), b.x.data() + begin * 784, size_t(end - begin) * 784 * sizeof(float));
  return out;
}

// Forward + loss + backward through DDP; returns the local loss.
inline float ddp_forward_backward(DistributedDataParallel& ddp, nn::CrossEntropyLoss& ce, const Batch& b) {
  const float loss = ce.forward(ddp.forward(b.x), b.y);
  ddp.backward(ce.backward());
  return loss;
}

inline float plain_step(nn::Model& m, nn::Optimizer& opt, nn::CrossEntropyLoss& ce, const Batch& b) {
  m.zero_grad();
  const float loss = ce.forward(m.forward(b.x), b.y);
  m.backward(ce.backward());
  opt.step();
  return loss;
}

inline std::vector<float> copy_params(nn::Model& m) {
  auto f = m.flat_params();
  return {f.begin(), f.end()};
}

// max over parameters of ||a - b||_inf / ||b||_inf, parameter by parameter.
inline double max_rel_diff(nn::Model& a, nn::Model& b) {
  double worst = 0;
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    auto va = a.parameters()[i]->value();
    auto vb = b.parameters()[i]->value();
    double diff = 0, ref = 0;
    for (size_t k = 0; k < va.size(); ++k) {
      diff = std::max(diff, double(std::fabs(va[k] - vb[k])));
      ref = std::max(ref, double(std::fabs(vb[k])));
    }
    worst = std::max(worst, diff / std::max(ref, 1e-12));
  }
  return worst;
}

inline bool bit_identical(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

using Grads = std::vector<std::vector<float>>;

// m's gradient (mean over b's samples) at its current parameters, parameter by parameter.
inline Grads gradients(nn::Model& m, const Batch& b, float* loss = nullptr) {
  nn::CrossEntropyLoss ce;
  m.zero_grad();
  const float l = ce.forward(m.forward(b.x), b.y);
  if (loss) *loss = l;
  m.backward(ce.backward());
  Grads g;
  for (const nn::Parameter* p : m.parameters()) g.emplace_back(p->grad().begin(), p->grad().end());
  return g;
}

inline void copy_values(nn::Model& from, nn::Model& to) {
  for (size_t i = 0; i < from.parameters().size(); ++i) {
    auto src = from.parameters()[i]->value();
    std::copy(src.begin(), src.end(), to.parameters()[i]->value().begin());
  }
}

// Checks each DDP step against one process computing the same step from the same parameters:
// the gradient DDP averaged (before the optimizer step) and the loss. Trajectories over many
// steps are not compared: any rounding difference (another kernel, batch size or summation
// order) flips the odd ReLU or max-pool near-tie, and training amplifies it chaotically. With
// oneDNN limited to AVX2 on an AMD EPYC every step agreed to 2.4e-6 (normwise) and 50 steps
// of W=3 ended 0.15 apart; an Intel Xeon's AVX-512 kernels ended 1.2e-4 apart. Step by step,
// the bounds follow from the arithmetic (u = 2^-24, gamma(n) = n u / (1 - n u)):
//  - against the mean of the shards' gradients computed by the same code on the same shards
//    (kernels are deterministic for a given shape), only the all-reduce's sum of W floats and
//    the division by W differ: |d_j| <= 2 (W + 1) u * mean_r |g_rj|;
//  - against one process on the concatenated batch, the batch reduction (B samples x P output
//    positions per sample) and the per-sample reductions along the network (fan-ins adding up
//    to F) may each run in another order: ||d||_inf <= 2 gamma(B P + F) * ||mean_s |g_s| ||_inf
//    per tensor, with g_s the gradient of sample s alone (normwise: a unit dead on most
//    samples has tiny elementwise magnitudes, and a near-tie decides one sample's term).
// A wrong scale, a bucket left out or reduced twice, or a gradient at the wrong offset is
// O(||g||) and fails both by orders of magnitude.
class OneProcessCheck {
 public:
  OneProcessCheck(const std::string& model, int world, int64_t batch_per_rank)
      : world_(world), shard_(batch_per_rank), ref_(nn::make_model(model, 99)) {
    const bool cnn = model == "fmnist-cnn";
    positions_ = cnn ? 28 * 28 : 1;  // conv1's output positions, or none
    fan_in_ = cnn ? 9 + 288 + 3136 + 128 : 784 + 512 + 256;
  }
  // Another architecture: its largest batch reduction sums B x `positions` terms, and its
  // per-sample reductions along the network add up to `fan_in` terms. In a model whose
  // samples interact (batch norm) the shards' gradients do not average to DDP's, and the
  // per-sample gradients do not split the batch's: their magnitude is taken over the whole
  // model (the bias before a norm has an exact gradient of 0 and rounding noise only).
  OneProcessCheck(std::unique_ptr<nn::Model> ref, int world, int64_t batch_per_rank, int64_t positions,
                  int64_t fan_in, bool samples_interact = false)
      : world_(world), shard_(batch_per_rank), positions_(positions), fan_in_(fan_in),
        samples_interact_(samples_interact), ref_(std::move(ref)) {}

  // `ddp` holds the step's starting parameters and DDP's averaged gradient, `grad_scale`
  // times the mean gradient over `full`, the global batch. With `buffers_before` (the
  // buffers the step started from), the buffers the step's forward left in `ddp` are
  // checked too.
  void check(int step, nn::Model& ddp, const Batch& full, float grad_scale = 1,
             std::span<const float> buffers_before = {}) {
    copy_values(ddp, *ref_);
    auto ref_buffers = ref_->flat_buffers();
    std::copy(buffers_before.begin(), buffers_before.end(), ref_buffers.begin());
    const auto B = int64_t(full.y.size());
    const double bound = 2 * gamma(B * positions_ + fan_in_);
    float loss = 0;
    Grads g_full = gradients(*ref_, full, &loss);
    ref_loss_.push_back(loss);
    if (!buffers_before.empty()) check_buffers(step, ddp, bound);
    std::vector<double> mag = per_sample_magnitude(full);
    for (size_t i = 0; i < g_full.size(); ++i) {
      auto g = ddp.parameters()[i]->grad();
      double d = 0;
      for (size_t j = 0; j < g.size(); ++j) d = std::max(d, std::fabs(double(g[j]) / grad_scale - g_full[i][j]));
      worst_ = std::max(worst_, d / (bound * mag[i]));
      ASSERT_LE(d, bound * mag[i]) << ddp.parameters()[i]->name() << " at step " << step
                                   << ": DDP's gradient differs from one process on the whole batch";
    }
    if (!samples_interact_ && shard_ * world_ == B && grad_scale == 1) check_against_shards(step, ddp, full);
  }

  // Each checked step's loss on the whole batch, from the same parameters as DDP's step.
  const std::vector<double>& loss() const { return ref_loss_; }
  // The largest error seen, as a fraction of its bound (recorded as a test property).
  double worst() const { return worst_; }

 private:
  static double gamma(int64_t n) { return double(n) * 0x1p-24 / (1 - double(n) * 0x1p-24); }

  // max_j of mean_s |g_sj|, tensor by tensor, from one backward per sample.
  std::vector<double> per_sample_magnitude(const Batch& full) {
    const auto B = int64_t(full.y.size());
    std::vector<std::vector<double>> sum;
    for (int64_t k = 0; k < B; ++k) {
      Grads g = gradients(*ref_, slice(full, k, k + 1));
      sum.resize(g.size());
      for (size_t i = 0; i < g.size(); ++i) {
        sum[i].resize(g[i].size());
        for (size_t j = 0; j < g[i].size(); ++j) sum[i][j] += std::fabs(g[i][j]) / double(B);
      }
    }
    std::vector<double> out;
    for (auto& t : sum) out.push_back(std::max(*std::max_element(t.begin(), t.end()), 1e-30));
    if (samples_interact_) std::fill(out.begin(), out.end(), *std::max_element(out.begin(), out.end()));
    return out;
  }

  // Running statistics from the same start: a blend of the old value and a batch mean over
  // B x positions terms, normwise against the buffer's own size (running variances start at 1).
  void check_buffers(int step, nn::Model& ddp, double bound) {
    auto got = ddp.flat_buffers();
    auto want = ref_->flat_buffers();
    double d = 0, mag = 1;
    for (size_t k = 0; k < want.size(); ++k) {
      d = std::max(d, double(std::fabs(got[k] - want[k])));
      mag = std::max(mag, double(std::fabs(want[k])));
    }
    worst_ = std::max(worst_, d / (bound * mag));
    ASSERT_LE(d, bound * mag) << "buffers at step " << step << " differ from one process on the whole batch";
  }

  void check_against_shards(int step, nn::Model& ddp, const Batch& full) {
    std::vector<std::vector<double>> mean, abs_mean;
    for (int r = 0; r < world_; ++r) {
      Grads g = gradients(*ref_, slice(full, r * shard_, (r + 1) * shard_));
      mean.resize(g.size()), abs_mean.resize(g.size());
      for (size_t i = 0; i < g.size(); ++i) {
        mean[i].resize(g[i].size()), abs_mean[i].resize(g[i].size());
        for (size_t j = 0; j < g[i].size(); ++j) {
          mean[i][j] += double(g[i][j]) / world_;
          abs_mean[i][j] += std::fabs(double(g[i][j])) / world_;
        }
      }
    }
    const double bound = 2.0 * (world_ + 1) * 0x1p-24;
    for (size_t i = 0; i < mean.size(); ++i) {
      auto g = ddp.parameters()[i]->grad();
      for (size_t j = 0; j < g.size(); ++j)
        ASSERT_LE(std::fabs(g[j] - mean[i][j]), bound * abs_mean[i][j] + 1e-38)
            << ddp.parameters()[i]->name() << "[" << j << "] at step " << step
            << ": DDP's average differs from the mean of the shards' gradients by more than the all-reduce's rounding";
    }
  }

  int world_;
  int64_t shard_;
  int64_t positions_ = 1, fan_in_ = 0;
  bool samples_interact_ = false;
  std::unique_ptr<nn::Model> ref_;
  std::vector<double> ref_loss_;
  double worst_ = 0;
};

}  // namespace lockstep::ddp::testing
