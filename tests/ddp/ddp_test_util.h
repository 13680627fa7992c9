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

}  // namespace lockstep::ddp::testing
