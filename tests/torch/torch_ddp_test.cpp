// lockstep::torch::DistributedDataParallel on a small torch::nn CNN, ranks as threads over
// the native backend: every step matches one process on the concatenated batch, replicas
// stay bit-identical, gradients are views of the buckets, no_sync accumulates locally and
// sums to the large batch, buffers come from rank 0, and bad set-ups are named on every rank.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>

#include "torch_test_util.h"

namespace {

using namespace lockstep_torch_test;

// The bound of tests/ddp/ddp_test_util.h's OneProcessCheck, for this network: against one
// process on the concatenated batch of B samples the only differences are the order of
// float additions, so per tensor ||d||_inf <= 2 gamma(B P + F) * max_j mean_s |g_sj|, with
// u = 2^-24, gamma(n) = n u / (1 - n u), P = 64 (the conv's output positions per sample: the
// largest batch reduction sums B P terms), F = 125 (the reductions along one sample's
// forward and backward: fan-ins 9 + 64 + 16, softmax 10, back through fc2 16 and fc1 10),
// and g_s the gradient of sample s alone. A wrong scale, a bucket reduced twice or not at
// all, or a gradient at the wrong offset is O(|g|) and fails by orders of magnitude. For a
// float64 model u = 2^-53 (a float64 model reduced in float32 would miss it by 2^29).
double gamma(int64_t n, double u = 0x1p-24) {
  return double(n) * u / (1 - double(n) * u);
}

// Checks `got` (scaled by 1/scale) against the gradient of `ref` on (x, y); returns the
// largest error as a fraction of its bound.
double check_against_one_process(Net& ref, const std::vector<torch::Tensor>& got,
                                 const torch::Tensor& x, const torch::Tensor& y, double scale,
                                 const std::string& what, double u = 0x1p-24) {
  const int64_t B = x.size(0);
  auto full = gradient(ref, x, y);
  std::vector<torch::Tensor> mag;
  for (auto& g : full) mag.push_back(torch::zeros_like(g, torch::kDouble));
  for (int64_t s = 0; s < B; ++s) {
    auto g = gradient(ref, x.slice(0, s, s + 1), y.slice(0, s, s + 1));
    for (size_t i = 0; i < g.size(); ++i) mag[i] += g[i].abs().to(torch::kDouble) / double(B);
  }
  const double bound = 2 * gamma(B * 64 + 125, u);
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
    if (std::memcmp(pa[i].data_ptr(), pb[i].data_ptr(), size_t(pa[i].nbytes())) != 0) return false;
  return true;
}

// (world, gradient_as_bucket_view): false stages every gradient through a copy, the path a
// module on a GPU takes (module_params.h), here on the CPU.
class TorchDdpEquivalence : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(TorchDdpEquivalence, EveryStepMatchesOneProcessAndReplicasStayIdentical) {
  const auto [world, bucket_view] = GetParam();
  const int steps = 4;
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
    TorchDdp ddp(*net, pg, o, {.gradient_as_bucket_view = bucket_view});
    ASSERT_EQ(ddp.params().staged(), !bucket_view);
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    for (int step = 0; step < steps; ++step) {
      const int64_t first = int64_t(step) * world * shard;
      if (step % 2 == 0) {  // in place (as 1.13's opt.zero_grad()): .grad() stays the view
        net->zero_grad(/*set_to_none=*/false);
        for (size_t i = 0; bucket_view && i < ddp.params().num_params(); ++i)
          ASSERT_EQ(ddp.params().param(i).grad().data_ptr(), ddp.params().grad(i).data());
      } else {  // as zero_grad(set_to_none) (LibTorch 2.x's default): autograd makes new tensors
        for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
      }
      auto x = data.x.slice(0, first + r * shard, first + (r + 1) * shard);
      auto y = data.y.slice(0, first + r * shard, first + (r + 1) * shard);
      torch::nn::functional::cross_entropy(ddp.forward(net, x), y).backward();
      ASSERT_TRUE(ddp.last_result().reduced);
      for (size_t i = 0; i < ddp.params().num_params(); ++i) {
        const at::Tensor& g = ddp.params().param(i).grad();
        const void* slice = ddp.params().grad(i).data();
        if (bucket_view) {
          ASSERT_EQ(g.data_ptr(), slice);
        } else {  // the module's own tensor, holding the averaged slice
          ASSERT_NE(g.data_ptr(), slice);
          ASSERT_EQ(std::memcmp(g.data_ptr(), slice, size_t(g.nbytes())), 0) << "parameter " << i;
        }
      }
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

INSTANTIATE_TEST_SUITE_P(Worlds, TorchDdpEquivalence,
                         ::testing::Values(std::tuple{2, true}, std::tuple{3, true},
                                           std::tuple{4, true}, std::tuple{2, false},
                                           std::tuple{3, false}));

class TorchDdpNoSync : public ::testing::TestWithParam<bool> {};

TEST_P(TorchDdpNoSync, AccumulatesLocallyAndSumsToTheLargeBatch) {
  const bool bucket_view = GetParam();
  const int world = 2;
  const int64_t shard = 4;
  torch::set_num_threads(1);
  Data data = make_data(2 * world * shard);  // micro-batch k, rank r: rows (k * world + r) * shard
  auto nets = make_nets(world);
  Net ref = make_nets(1)[0];
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    Net& net = nets[size_t(r)];
    TorchDdp ddp(*net, pg, small_buckets(), {.gradient_as_bucket_view = bucket_view});
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
INSTANTIATE_TEST_SUITE_P(BucketView, TorchDdpNoSync, ::testing::Bool());

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

class TorchDdpBuffers : public ::testing::TestWithParam<bool> {};

TEST_P(TorchDdpBuffers, ComeFromRankZero) {
  const bool bucket_view = GetParam();  // false: through the host copies a GPU module uses
  const int world = 2;
  std::vector<torch::nn::BatchNorm1d> bns;
  for (int r = 0; r < world; ++r) {
    bns.emplace_back(3);
    torch::NoGradGuard no_grad;
    bns.back()->running_mean.fill_(float(r + 1));
    bns.back()->weight.fill_(float(r + 1));  // a parameter: rank 0's too
    bns.back()->num_batches_tracked.fill_(10 * (r + 1));
  }
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    TorchDdp ddp(*bns[size_t(r)], pg, {}, {.gradient_as_bucket_view = bucket_view});
    EXPECT_TRUE(torch::equal(bns[size_t(r)]->running_mean, torch::ones({3}))) << "rank " << r;
    EXPECT_TRUE(torch::equal(bns[size_t(r)]->weight, torch::ones({3}))) << "rank " << r;
    EXPECT_EQ(bns[size_t(r)]->num_batches_tracked.item<int64_t>(), 10) << "rank " << r;
    {
      torch::NoGradGuard no_grad;
      bns[size_t(r)]->running_var.fill_(float(r + 5));
    }
    ddp.sync_buffers();  // what forward() does first
    EXPECT_TRUE(torch::equal(bns[size_t(r)]->running_var, torch::full({3}, 5.0f))) << "rank " << r;
  });
}

INSTANTIATE_TEST_SUITE_P(BucketView, TorchDdpBuffers, ::testing::Bool());

// A float64 model is reduced in float64: every step matches one process within the bound
// above at u = 2^-53, and replicas stay bit-identical.
TEST(TorchDdp, Float64MatchesOneProcessAtFloat64Roundoff) {
  const int world = 2, steps = 2;
  const int64_t shard = 4;
  torch::set_num_threads(1);
  Data data = make_data(int64_t(steps) * world * shard);
  data.x = data.x.to(torch::kDouble);
  auto nets = make_nets(world);
  Net ref = make_nets(1)[0];
  for (auto* n : {&nets[0], &nets[1], &ref}) (*n)->to(torch::kDouble);
  double worst = 0;
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    Net& net = nets[size_t(r)];
    DdpOptions o = small_buckets();
    o.check_replicas_every = 1;
    TorchDdp ddp(*net, pg, o);
    torch::optim::SGD opt(net->parameters(), 0.1);
    for (int step = 0; step < steps; ++step) {
      const int64_t first = int64_t(step) * world * shard;
      opt.zero_grad();
      auto x = data.x.slice(0, first + r * shard, first + (r + 1) * shard);
      auto y = data.y.slice(0, first + r * shard, first + (r + 1) * shard);
      torch::nn::functional::cross_entropy(ddp.forward(net, x), y).backward();
      if (r == 0) {
        copy_params(net, ref);
        worst =
            std::max(worst, check_against_one_process(
                                ref, grads_of(net), data.x.slice(0, first, first + world * shard),
                                data.y.slice(0, first, first + world * shard), 1.0,
                                "float64 at step " + std::to_string(step), 0x1p-53));
      }
      ASSERT_TRUE(ddp.step(opt));
    }
  });
  RecordProperty("worst_error_over_bound", std::to_string(worst));
  EXPECT_TRUE(bit_identical(nets[0], nets[1]));
}

// Parameters of all four float dtypes in one module, adjacent in the buckets' order.
struct MixedImpl : torch::nn::Module {
  MixedImpl() {
    scale = register_parameter("scale", torch::linspace(0.5, 2.0, 4).to(torch::kHalf));
    a = register_module("a", torch::nn::Linear(8, 8));
    b = register_module("b", torch::nn::Linear(8, 8));
    c = register_module("c", torch::nn::Linear(8, 4));
    a->to(torch::kDouble);
    b->to(torch::kBFloat16);
  }
  torch::Tensor forward(torch::Tensor x) {  // x: float32
    x = torch::tanh(a->forward(x.to(torch::kDouble)));
    x = torch::tanh(b->forward(x.to(torch::kBFloat16)));
    return c->forward(x.to(torch::kFloat)) * scale.to(torch::kFloat);
  }
  torch::Tensor scale;
  torch::nn::Linear a{nullptr}, b{nullptr}, c{nullptr};
};
TORCH_MODULE(Mixed);

// Each bucket holds one dtype and is all-reduced in it (f16/bf16 accumulate in float32 in the
// collective). With two ranks the average is one addition and an exact halving, rounded once
// to the parameter's dtype: every element of DDP's gradient is within u |mean| of the exact
// mean of the two ranks' own gradients (computed by the same kernels on a copy of the model),
// u the dtype's unit roundoff: 2^-24, 2^-53, 2^-11, 2^-8. Reducing float64 in float32 misses
// its bound by 2^29; a bucket mixing dtypes or read at the wrong element size is O(|g|) off.
double unit_roundoff(torch::ScalarType t) {
  switch (t) {
    case torch::kDouble:
      return 0x1p-53;
    case torch::kHalf:
      return 0x1p-11;
    case torch::kBFloat16:
      return 0x1p-8;
    default:
      return 0x1p-24;
  }
}

TEST(TorchDdp, EachDtypeIsReducedInItsOwnType) {
  const int world = 2;
  torch::set_num_threads(1);
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({world, 4, 8});
  std::vector<Mixed> nets, local;
  for (int k = 0; k < 2 * world; ++k) {
    torch::manual_seed(11);  // identical copies: local[r] is what rank r computes alone
    (k < world ? nets : local).emplace_back();
  }
  std::vector<std::vector<torch::Tensor>> mine(world), got(world);
  std::vector<int64_t> copied(world, -1);
  run_ranks(world, [&](int r, ProcessGroup& pg) {
    DdpOptions o = small_buckets();
    o.reducer.buckets.first_bucket_bytes = 64;
    o.check_replicas_every = 1;
    Mixed& net = nets[size_t(r)];
    TorchDdp ddp(*net, pg, o);
    torch::optim::SGD opt(net->parameters(), 0.1);
    for (int step = 0; step < 2; ++step) {  // the second after the buckets' rebuild
      opt.zero_grad();
      net->forward(x[r]).pow(2).mean().backward();
      for (size_t i = 0; i < ddp.params().num_params(); ++i)
        ASSERT_EQ(ddp.params().param(i).grad().data_ptr(),
                  static_cast<void*>(ddp.params().grad_bytes(i).data()));
      got[size_t(r)].clear();
      for (auto& p : net->parameters()) got[size_t(r)].push_back(p.grad().clone());
      local[size_t(r)]->zero_grad();
      local[size_t(r)]->forward(x[r]).pow(2).mean().backward();
      mine[size_t(r)].clear();
      for (auto& p : local[size_t(r)]->parameters()) mine[size_t(r)].push_back(p.grad().clone());
      pg.barrier().wait(std::chrono::seconds(30));
      if (r == 0) {
        auto names = net->named_parameters().keys();
        for (size_t i = 0; i < got[0].size(); ++i) {
          const auto mean = (mine[0][i].to(torch::kDouble) + mine[1][i].to(torch::kDouble)) / 2;
          const double u = unit_roundoff(got[0][i].scalar_type());
          for (int q = 0; q < world; ++q)
            EXPECT_TRUE((got[size_t(q)][i].to(torch::kDouble) - mean)
                            .abs()
                            .le(mean.abs() * u)
                            .all()
                            .item<bool>())
                << "rank " << q << " step " << step << " " << names[i] << " ("
                << got[0][i].scalar_type() << ", u = " << u << ")";
        }
      }
      pg.barrier().wait(std::chrono::seconds(30));
      ASSERT_TRUE(ddp.step(opt));
      copy_params(net, local[size_t(r)]);
    }
    copied[size_t(r)] = int64_t(ddp.reducer().storage().copied_buckets());
  });
  EXPECT_EQ(copied[0], 0) << "every bucket a view of the gradients, after the re-layout";
}

// ModuleParams with device buckets, on its own (lockstep's in-place NCCL reduction needs
// one GPU per rank; on a one-GPU machine DDP runs at world size 1, where nothing is
// reduced): every .grad() is a view of its slice of one array on the module's device,
// autograd accumulates into it, a re-layout keeps the values, nonfinite() finds a NaN (on
// the GPU, through torch), and a .grad() set to none and made anew by autograd is put back.
// On the CPU here; on a GPU where there is one (Debian's LibTorch has no CUDA:
// `scripts/gpu-check libtorch` runs it there).
class TorchDeviceBuckets : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchDeviceBuckets, AreViewsOfOneArrayOnTheModulesDevice) {
  const torch::Device device(GetParam());
  if (device.is_cuda() && !torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  Data data = make_data(8);
  const torch::Tensor x = data.x.to(device), y = data.y.to(device);
  Net net = make_nets(1)[0], ref = make_nets(1)[0];
  net->to(device);
  ref->to(device);
  lockstep::torch::ModuleParams p(*net, /*bucket_view=*/true, /*device_buckets=*/true);
  ASSERT_FALSE(p.staged());
  ASSERT_EQ(p.grads_on_host(), device.is_cpu());
  ASSERT_EQ(p.grads_device(), device);
  auto is_view = [&](size_t i) {
    const torch::Tensor& g = p.param(i).grad();
    return g.defined() && g.device() == device &&
           g.data_ptr() == static_cast<void*>(p.grad_bytes(i).data());
  };
  for (size_t i = 0; i < p.num_params(); ++i) ASSERT_TRUE(is_view(i)) << "parameter " << i;
  // Autograd accumulates into the views: the gradient of an unwrapped copy.
  torch::nn::functional::cross_entropy(net->forward(x), y).backward();
  const auto want = gradient(ref, x, y);
  const auto got = grads_of(net);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(is_view(i)) << "parameter " << i << " after backward";
    EXPECT_TRUE(torch::allclose(got[i], want[i], 1e-5, 1e-6)) << "parameter " << i;
  }
  // Another layout (as the buckets' rebuild after the first step asks): values kept.
  std::vector<size_t> order(p.num_params());
  std::iota(order.begin(), order.end(), size_t(0));  // registration order; the first is reversed
  ASSERT_TRUE(p.set_grad_order(order));
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(is_view(i)) << "parameter " << i << " after the re-layout";
    EXPECT_TRUE(torch::equal(p.param(i).grad(), got[i])) << "parameter " << i << " moved wrong";
  }
  // NaN/Inf is found, in the parameter that holds it.
  EXPECT_FALSE(p.nonfinite(p.grad_bytes(1), lockstep::DType::f32));
  p.param(1).grad().view(-1)[0].fill_(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(p.nonfinite(p.grad_bytes(1), lockstep::DType::f32));
  EXPECT_FALSE(p.nonfinite(p.grad_bytes(0), lockstep::DType::f32));
  // .grad() set to none: autograd makes a tensor of its own; attach_grad copies it into the view.
  net->zero_grad(/*set_to_none=*/true);
  torch::nn::functional::cross_entropy(net->forward(x), y).backward();
  for (size_t i = 0; i < p.num_params(); ++i) {
    const torch::Tensor fresh = p.param(i).grad().clone();
    p.attach_grad(i);
    EXPECT_TRUE(is_view(i)) << "parameter " << i << " after attach_grad";
    EXPECT_TRUE(torch::equal(p.param(i).grad(), fresh)) << "parameter " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, TorchDeviceBuckets, ::testing::Values("cpu", "cuda:0"),
                         [](const auto& info) { return std::string(info.param).substr(0, 4); });

}  // namespace
