// lockstep::torch::DistributedDataParallel on a small torch::nn CNN, ranks as threads over
// the native backend: every step matches one process on the concatenated batch, replicas
// stay bit-identical, gradients are views of the buckets, no_sync accumulates locally and
// sums to the large batch, buffers come from rank 0, and bad set-ups are named on every rank.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <mutex>

#include "../ddp/ddp_test_util.h"
#include "lockstep/core/error.h"
#include "lockstep/torch/ddp.h"

namespace {

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
DdpOptions small_buckets() {
  DdpOptions o;
  o.reducer.buckets.bucket_cap_bytes = 1024;
  o.reducer.buckets.first_bucket_bytes = 256;
  return o;
}

struct Data {
  torch::Tensor x, y;  // all samples of all steps
};

// Made on the main thread: torch's default generator is shared by the rank threads.
Data make_data(int64_t n) {
  torch::manual_seed(1234);
  return {torch::rand({n, 1, 8, 8}), torch::randint(0, 10, {n}, torch::kLong)};
}

// Each rank's model from another seed: DDP must copy rank 0's.
std::vector<Net> make_nets(int world, int64_t classes = 10, bool unused = false) {
  std::vector<Net> nets;
  for (int r = 0; r < world; ++r) {
    torch::manual_seed(uint64_t(r) + 7);
    nets.emplace_back(classes, unused);
  }
  return nets;
}

std::vector<torch::Tensor> grads_of(Net& net) {
  std::vector<torch::Tensor> g;
  for (auto& p : net->parameters()) g.push_back(p.grad().clone());
  return g;
}

void copy_params(Net& from, Net& to) {
  torch::NoGradGuard no_grad;
  auto a = from->parameters(), b = to->parameters();
  for (size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
}

std::vector<torch::Tensor> gradient(Net& net, const torch::Tensor& x, const torch::Tensor& y) {
  net->zero_grad();
  torch::nn::functional::cross_entropy(net->forward(x), y).backward();
  return grads_of(net);
}

// The bound of tests/ddp/ddp_test_util.h's OneProcessCheck, for this network: against one
// process on the concatenated batch of B samples the only differences are the order of
// float additions, so per tensor ||d||_inf <= 2 gamma(B P + F) * max_j mean_s |g_sj|, with
// u = 2^-24, gamma(n) = n u / (1 - n u), P = 64 (the conv's output positions per sample: the
// largest batch reduction sums B P terms), F = 125 (the reductions along one sample's
// forward and backward: fan-ins 9 + 64 + 16, softmax 10, back through fc2 16 and fc1 10),
// and g_s the gradient of sample s alone. A wrong scale, a bucket reduced twice or not at
// all, or a gradient at the wrong offset is O(|g|) and fails by orders of magnitude.
double gamma(int64_t n) {
  return double(n) * 0x1p-24 / (1 - double(n) * 0x1p-24);
}

// Checks `got` (scaled by 1/scale) against the gradient of `ref` on (x, y); returns the
// largest error as a fraction of its bound.
double check_against_one_process(Net& ref, const std::vector<torch::Tensor>& got,
                                 const torch::Tensor& x, const torch::Tensor& y, double scale,
                                 const std::string& what) {
  const int64_t B = x.size(0);
  auto full = gradient(ref, x, y);
  std::vector<torch::Tensor> mag;
  for (auto& g : full) mag.push_back(torch::zeros_like(g, torch::kDouble));
  for (int64_t s = 0; s < B; ++s) {
    auto g = gradient(ref, x.slice(0, s, s + 1), y.slice(0, s, s + 1));
    for (size_t i = 0; i < g.size(); ++i) mag[i] += g[i].abs().to(torch::kDouble) / double(B);
  }
  const double bound = 2 * gamma(B * 64 + 125);
  double worst = 0;
  auto names = ref->named_parameters().keys();
  for (size_t i = 0; i < full.size(); ++i) {
    const double d =
        (got[i].to(torch::kDouble) / scale - full[i].to(torch::kDouble)).abs().max().item<double>();
    const double b = bound * std::max(mag[i].max().item<double>(), 1e-30);
    EXPECT_LE(d, b) << names[i] << " " << what
                    << ": DDP's gradient differs from one process on the whole batch";
    worst = std::max(worst, d / b);
  }
  return worst;
}

bool bit_identical(Net& a, Net& b) {
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    if (std::memcmp(pa[i].data_ptr(), pb[i].data_ptr(), size_t(pa[i].numel()) * sizeof(float)) != 0)
      return false;
  return true;
}

class TorchDdpEquivalence : public ::testing::TestWithParam<int> {};

TEST_P(TorchDdpEquivalence, EveryStepMatchesOneProcessAndReplicasStayIdentical) {
  const int world = GetParam(), steps = 4;
  const int64_t shard = 4;
  torch::set_num_threads(1);
  Data data = make_data(int64_t(steps) * world * shard);
  auto nets = make_nets(world);
  Net ref = make_nets(1)[0];
  double worst = 0;
  std::vector<int64_t> copied(size_t(world), -1), relayouts(size_t(world), -1);
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    Net& net = nets[size_t(r)];
    DdpOptions o = small_buckets();
    o.check_replicas_every = 1;  // ddp.step() compares parameter hashes across ranks each step
    TorchDdp ddp(*net, pg, o);
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    for (int step = 0; step < steps; ++step) {
      const int64_t first = int64_t(step) * world * shard;
      if (step % 2 == 0) {
        opt.zero_grad();
      } else {  // as zero_grad(set_to_none) (LibTorch 2.x's default): autograd makes new tensors
        for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
      }
      auto x = data.x.slice(0, first + r * shard, first + (r + 1) * shard);
      auto y = data.y.slice(0, first + r * shard, first + (r + 1) * shard);
      torch::nn::functional::cross_entropy(ddp.forward(net, x), y).backward();
      ASSERT_TRUE(ddp.last_result().reduced);
      for (size_t i = 0; i < ddp.params().num_params(); ++i)  // gradient_as_bucket_view
        ASSERT_EQ(ddp.params().param(i).grad().data_ptr(),
                  static_cast<void*>(ddp.params().grad(i).data()));
      if (r == 0) {
        copy_params(net, ref);
        worst =
            std::max(worst, check_against_one_process(ref, grads_of(net),
                                                      data.x.slice(0, first, first + world * shard),
                                                      data.y.slice(0, first, first + world * shard),
                                                      1.0, "at step " + std::to_string(step)));
      }
      ASSERT_TRUE(ddp.step(opt));
    }
    copied[size_t(r)] = int64_t(ddp.reducer().storage().copied_buckets());
    relayouts[size_t(r)] = ddp.reducer().stats().relayouts;
  });
  RecordProperty("worst_error_over_bound", std::to_string(worst));
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(bit_identical(nets[0], nets[size_t(r)])) << "rank " << r << " differs from rank 0";
    EXPECT_EQ(copied[size_t(r)], 0)
        << "rank " << r << ": buckets should be zero-copy views after the re-layout";
    EXPECT_EQ(relayouts[size_t(r)], 1)
        << "rank " << r << ": the gradients were not re-laid out in ready order";
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, TorchDdpEquivalence, ::testing::Values(2, 3, 4));

TEST(TorchDdp, NoSyncAccumulatesLocallyAndSumsToTheLargeBatch) {
  const int world = 2;
  const int64_t shard = 4;
  torch::set_num_threads(1);
  Data data = make_data(2 * world * shard);  // micro-batch k, rank r: rows (k * world + r) * shard
  auto nets = make_nets(world);
  Net ref = make_nets(1)[0];
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    Net& net = nets[size_t(r)];
    TorchDdp ddp(*net, pg, small_buckets());
    Net local = make_nets(1)[0];
    copy_params(net, local);
    auto rows = [&](int k) {
      return std::pair{(k * world + r) * shard, (k * world + r + 1) * shard};
    };
    auto [b0, e0] = rows(0);
    net->zero_grad();
    {
      auto guard = ddp.no_sync();
      torch::nn::functional::cross_entropy(ddp.forward(net, data.x.slice(0, b0, e0)),
                                           data.y.slice(0, b0, e0))
          .backward();
    }
    EXPECT_EQ(ddp.reducer().stats().steps, 0)
        << "rank " << r << ": no_sync's backward communicated";
    // Still this rank's own gradient: the same kernels on the same rows, bit for bit.
    auto mine = gradient(local, data.x.slice(0, b0, e0), data.y.slice(0, b0, e0));
    auto got = grads_of(net);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_TRUE(torch::equal(got[i], mine[i]))
          << "rank " << r << " parameter " << i << " after no_sync's backward";
    auto [b1, e1] = rows(1);
    torch::nn::functional::cross_entropy(ddp.forward(net, data.x.slice(0, b1, e1)),
                                         data.y.slice(0, b1, e1))
        .backward();
    EXPECT_EQ(ddp.reducer().stats().steps, 1);
    // Two accumulated means over equal micro-batches: twice the mean over all 2 W shards.
    if (r == 0)
      check_against_one_process(ref, grads_of(net), data.x, data.y, 2.0,
                                "after no_sync accumulation");
  });
}

// DdpOptions::comm_hook reaches the same Reducer: bf16 compression leaves every averaged
// gradient exactly a bfloat16 value (decoded from the wire), which a float32 all-reduce
// practically never does for a whole model.
TEST(TorchDdp, CommHookFromOptionsCompressesTheBuckets) {
  const int world = 2;
  const int64_t shard = 4;
  torch::set_num_threads(1);
  Data data = make_data(world * shard);
  auto nets = make_nets(world);
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    DdpOptions o = small_buckets();
    o.comm_hook = "bf16";
    TorchDdp ddp(*nets[size_t(r)], pg, o);
    EXPECT_EQ(ddp.reducer().comm_hook().name(), "bf16");
    auto x = data.x.slice(0, r * shard, (r + 1) * shard),
         y = data.y.slice(0, r * shard, (r + 1) * shard);
    torch::nn::functional::cross_entropy(ddp.forward(nets[size_t(r)], x), y).backward();
    for (auto& g : grads_of(nets[size_t(r)]))
      EXPECT_TRUE(torch::equal(g, g.to(torch::kBFloat16).to(torch::kFloat))) << "rank " << r;
  });
}

TEST(TorchDdp, BuffersComeFromRankZero) {
  const int world = 2;
  std::vector<torch::nn::BatchNorm1d> bns;
  for (int r = 0; r < world; ++r) {
    bns.emplace_back(3);
    torch::NoGradGuard no_grad;
    bns.back()->running_mean.fill_(float(r + 1));
    bns.back()->num_batches_tracked.fill_(10 * (r + 1));
  }
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    TorchDdp ddp(*bns[size_t(r)], pg);
    EXPECT_TRUE(torch::equal(bns[size_t(r)]->running_mean, torch::ones({3}))) << "rank " << r;
    EXPECT_EQ(bns[size_t(r)]->num_batches_tracked.item<int64_t>(), 10) << "rank " << r;
    {
      torch::NoGradGuard no_grad;
      bns[size_t(r)]->running_var.fill_(float(r + 5));
    }
    ddp.sync_buffers();  // what forward() does first
    EXPECT_TRUE(torch::equal(bns[size_t(r)]->running_var, torch::full({3}, 5.0f))) << "rank " << r;
  });
}

// Runs fn on every rank, catching each rank's error message (so that one rank's error does
// not abort the others' groups): the errors must be named on every rank.
std::vector<std::string> errors_on_each_rank(int world,
                                             const std::function<void(int, ProcessGroup&)>& fn) {
  std::vector<std::string> errors(static_cast<size_t>(world));
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    try {
      fn(r, pg);
    } catch (const std::exception& e) {
      errors[size_t(r)] = e.what();
    }
  });
  return errors;
}

TEST(TorchDdp, MismatchedArchitectureIsNamedOnEveryRank) {
  std::vector<Net> nets{make_nets(1, 10)[0], make_nets(1, 11)[0]};  // rank 1: 11 classes
  auto errors =
      errors_on_each_rank(2, [&](int r, ProcessGroup& pg) { TorchDdp ddp(*nets[size_t(r)], pg); });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errors[size_t(r)].find("fc2.weight [10, 16] float32"), std::string::npos)
        << errors[size_t(r)];
    EXPECT_NE(errors[size_t(r)].find("fc2.weight [11, 16] float32"), std::string::npos)
        << errors[size_t(r)];
  }
}

// A buffer of another dtype than float32 (broadcast apart from the reducer's source) is part
// of the architecture too: here an int64 counter of another shape on rank 1.
TEST(TorchDdp, MismatchedNonFloatBufferIsNamedOnEveryRank) {
  std::vector<Net> nets = make_nets(2);
  for (int r = 0; r < 2; ++r)
    nets[size_t(r)]->register_buffer("counter", torch::zeros({r + 1}, torch::kLong));
  auto errors =
      errors_on_each_rank(2, [&](int r, ProcessGroup& pg) { TorchDdp ddp(*nets[size_t(r)], pg); });
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(errors[size_t(r)].find("counter [2] int64"), std::string::npos)
        << "rank " << r << ": " << errors[size_t(r)];
}

TEST(TorchDdp, UnusedParameterIsNamedOnEveryRankOrReducedWithFindUnused) {
  Data data = make_data(8);
  auto nets = make_nets(2, 10, /*unused=*/true);
  auto errors = errors_on_each_rank(2, [&](int r, ProcessGroup& pg) {
    TorchDdp ddp(*nets[size_t(r)], pg);
    torch::nn::functional::cross_entropy(ddp.forward(nets[size_t(r)], data.x), data.y).backward();
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errors[size_t(r)].find("spare.weight"), std::string::npos)
        << "rank " << r << ": " << errors[size_t(r)];
    EXPECT_NE(errors[size_t(r)].find("find_unused_parameters"), std::string::npos)
        << errors[size_t(r)];
  }
  DdpOptions o;
  o.reducer.find_unused_parameters = true;
  errors = errors_on_each_rank(2, [&](int r, ProcessGroup& pg) {
    TorchDdp ddp(*nets[size_t(r)], pg, o);
    torch::nn::functional::cross_entropy(ddp.forward(nets[size_t(r)], data.x), data.y).backward();
    EXPECT_EQ(ddp.last_result().unused.size(), 2u) << "rank " << r;  // spare.weight, spare.bias
  });
  for (int r = 0; r < 2; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
}

TEST(TorchDdp, UnsupportedDtypeIsNamed) {
  Net net;
  net->fc1->to(torch::kDouble);
  try {
    lockstep::torch::ModuleParams params(*net);
    FAIL() << "a float64 parameter was accepted";
  } catch (const lockstep::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'fc1.weight' is float64"), std::string::npos) << e.what();
  }
}

}  // namespace
