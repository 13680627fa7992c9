// Shared by the lockstep::torch tests: a small torch::nn CNN, its data, and running ranks
// as threads over the native backend (tests/ddp/ddp_test_util.h).
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "../ddp/ddp_test_util.h"
#include "lockstep/core/error.h"
#include "lockstep/torch/ddp.h"

namespace lockstep_torch_test {

using lockstep::comm::ProcessGroup;
using lockstep::ddp::DdpOptions;
using lockstep::ddp::testing::run_ranks;
using TorchDdp = lockstep::torch::DistributedDataParallel;

// 1x8x8 images -> conv 3x3 (4 channels, 8x8 positions) -> relu -> max-pool 2 -> 64 -> 16 ->
// classes. fc2 is registered before fc1, out of use order: the gradients' ready order then differs
// from the first layout, and the buckets' rebuild after step 1 re-lays them out.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t classes = 10, bool unused_layer = false) {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3).padding(1)));
    fc2 = register_module("fc2", torch::nn::Linear(16, classes));
    fc1 = register_module("fc1", torch::nn::Linear(64, 16));
    if (unused_layer) spare = register_module("spare", torch::nn::Linear(4, 4));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv->forward(x)), 2);
    return fc2->forward(torch::relu(fc1->forward(x.flatten(1))));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, spare{nullptr};
};
TORCH_MODULE(Net);

// Small buckets (several per backward, rebuilt and re-laid out after the first step).
inline DdpOptions small_buckets() {
  DdpOptions o;
  o.reducer.buckets.bucket_cap_bytes = 1024;
  o.reducer.buckets.first_bucket_bytes = 256;
  return o;
}

struct Data {
  torch::Tensor x, y;  // all samples of all steps
};

// Made on the main thread: torch's default generator is shared by the rank threads.
inline Data make_data(int64_t n) {
  torch::manual_seed(1234);
  return {torch::rand({n, 1, 8, 8}), torch::randint(0, 10, {n}, torch::kLong)};
}

// Each rank's model from another seed: DDP must copy rank 0's.
inline std::vector<Net> make_nets(int world, int64_t classes = 10, bool unused = false) {
  std::vector<Net> nets;
  for (int r = 0; r < world; ++r) {
    torch::manual_seed(uint64_t(r) + 7);
    nets.emplace_back(classes, unused);
  }
  return nets;
}

inline std::vector<torch::Tensor> grads_of(Net& net) {
  std::vector<torch::Tensor> g;
  for (auto& p : net->parameters()) g.push_back(p.grad().clone());
  return g;
}

template <class M>
void copy_params(M& from, M& to) {
  torch::NoGradGuard no_grad;
  auto a = from->parameters(), b = to->parameters();
  for (size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
}

inline std::vector<torch::Tensor> gradient(Net& net, const torch::Tensor& x,
                                           const torch::Tensor& y) {
  net->zero_grad();
  torch::nn::functional::cross_entropy(net->forward(x), y).backward();
  return grads_of(net);
}
// Runs fn on every rank, catching each rank's error message (so that one rank's error does
// not abort the others' groups): the errors must be named on every rank.
inline std::vector<std::string> errors_on_each_rank(
    int world, const std::function<void(int, ProcessGroup&)>& fn,
    std::chrono::seconds timeout = std::chrono::seconds(30)) {
  std::vector<std::string> errors(static_cast<size_t>(world));
  run_ranks(
      world,
      [&](int r, ProcessGroup& pg) {
        try {
          fn(r, pg);
        } catch (const std::exception& e) {
          errors[size_t(r)] = e.what();
        }
      },
      timeout);
  return errors;
}
}  // namespace lockstep_torch_test
