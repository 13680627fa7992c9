// Bad input to lockstep::torch::DistributedDataParallel gets a clear error on every rank,
// never a hang: another architecture, a parameter on another device or of a dtype the
// reducer cannot hold, parameters changed after wrapping, a backward that leaves some
// parameters without a gradient (named on the rank that skipped them; its peers' wait is
// named and bounded by DdpOptions::timeout).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>

#include "torch_test_util.h"

namespace {

using namespace lockstep_torch_test;

void expect_on_every_rank(const std::vector<std::string>& errors,
                          const std::vector<std::string>& parts) {
  for (size_t r = 0; r < errors.size(); ++r)
    for (const auto& part : parts)
      EXPECT_NE(errors[r].find(part), std::string::npos)
          << "rank " << r << " lacks '" << part << "' in: '" << errors[r] << "'";
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

// Only rank 1's module is bad: rank 0 must not wait for it in the architecture check.
TEST(TorchDdp, ParameterOnAnotherDeviceIsNamedOnEveryRank) {
  auto nets = make_nets(2);
  for (int r = 0; r < 2; ++r)  // rank 1's on the meta device (LibTorch 1.13 cannot move to it)
    nets[size_t(r)]->fc1->register_parameter(
        "scale", torch::ones({16}, torch::Device(r == 1 ? torch::kMeta : torch::kCPU)));
  auto errors =
      errors_on_each_rank(2, [&](int r, ProcessGroup& pg) { TorchDdp ddp(*nets[size_t(r)], pg); });
  expect_on_every_rank(errors, {"rank 1 cannot wrap its module",
                                "'fc1.scale' is on meta but 'conv.weight' is on cpu"});
}

TEST(TorchDdp, UnsupportedDtypeIsNamedOnEveryRank) {
  auto nets = make_nets(2);
  nets[0]->register_parameter("phase", torch::zeros({3}, torch::kComplexFloat));
  auto errors =
      errors_on_each_rank(2, [&](int r, ProcessGroup& pg) { TorchDdp ddp(*nets[size_t(r)], pg); });
  expect_on_every_rank(errors, {"rank 0 cannot wrap its module", "'phase' is ComplexFloat"});
}

// Each change happens on every rank alike (the same program), after wrapping; DDP names it
// at the next forward, backward or step, before any collective of that step.
TEST(TorchDdp, ParametersChangedAfterWrappingAreNamed) {
  Data data = make_data(8);
  auto x = data.x.slice(0, 0, 4), y = data.y.slice(0, 0, 4);
  auto train_step = [&](TorchDdp& ddp, Net& net, bool through_ddp) {
    auto out = through_ddp ? ddp.forward(net, x) : net->forward(x);
    torch::nn::functional::cross_entropy(out, y).backward();
    torch::optim::SGD opt(net->parameters(), 0.1);
    ddp.step(opt);
  };
  struct Case {
    std::function<void(Net&)> change;
    bool through_ddp;
    std::vector<std::string> expected;
  };
  const std::vector<Case> cases = {
      {[](Net& n) { n->register_parameter("extra", torch::zeros({3})); },
       true,
       {"at forward after step 1", "'extra' was added"}},
      {[](Net& n) { n->fc1 = n->replace_module("fc1", torch::nn::Linear(64, 16)); },
       false,
       {"at backward after step 1", "'fc1.weight' was re-registered"}},
      {[](Net& n) { n->conv->bias.requires_grad_(false); },
       false,
       {"at backward after step 1", "'conv.bias' was removed or frozen"}},
      {[](Net& n) { n->fc1->bias.requires_grad_(false); },
       false,
       {"at backward after step 1", "'fc1.bias' was removed or frozen"}},
  };
  for (const Case& c : cases) {
    auto nets = make_nets(2);
    auto errors = errors_on_each_rank(2, [&](int r, ProcessGroup& pg) {
      Net& net = nets[size_t(r)];
      TorchDdp ddp(*net, pg);
      train_step(ddp, net, true);
      c.change(net);
      train_step(ddp, net, c.through_ddp);
    });
    expect_on_every_rank(errors, c.expected);
  }
  // New storage of the same tensor (a cast or move does this too), after backward: at step.
  auto nets = make_nets(2);
  auto errors = errors_on_each_rank(2, [&](int r, ProcessGroup& pg) {
    Net& net = nets[size_t(r)];
    TorchDdp ddp(*net, pg);
    torch::nn::functional::cross_entropy(ddp.forward(net, x), y).backward();
    net->fc1->weight.set_data(net->fc1->weight.detach().clone());
    torch::optim::SGD opt(net->parameters(), 0.1);
    ddp.step(opt);
  });
  expect_on_every_rank(errors, {"at step after step 0", "'fc1.weight' has new storage"});
}

// Rank 1's forward leaves out the layer rank 0 uses: rank 1 names the parameters without a
// gradient; rank 0 names the bucket it waited for, within DdpOptions::timeout. With
// find_unused_parameters both reduce (rank 1 contributes zeros).
TEST(TorchDdp, BackwardTouchingOnlySomeRanksParametersIsNamed) {
  Data data = make_data(8);
  auto nets = make_nets(2, 10, /*unused=*/true);
  auto run = [&](int r, ProcessGroup& pg, DdpOptions o) {
    Net& net = nets[size_t(r)];
    TorchDdp ddp(*net, pg, o);
    net->zero_grad();
    auto loss = torch::nn::functional::cross_entropy(ddp.forward(net, data.x), data.y);
    if (r == 0) loss = loss + net->spare->forward(torch::ones({1, 4})).sum();
    loss.backward();
    return net->spare->bias.grad().clone();
  };
  DdpOptions o;
  o.timeout = std::chrono::seconds(2);
  const auto t0 = std::chrono::steady_clock::now();
  // The group's own deadline bounds its teardown with an operation in flight: 3 s too.
  auto errors = errors_on_each_rank(
      2, [&](int r, ProcessGroup& pg) { run(r, pg, o); }, std::chrono::seconds(3));
  // Generous (the bounds are 2 and 3 s): a hang would take the test's timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  EXPECT_NE(errors[1].find("received no gradient at step 0: spare.weight, spare.bias"),
            std::string::npos)
      << errors[1];
  EXPECT_NE(errors[0].find("spare.bias"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("was not reduced"), std::string::npos) << errors[0];
  o.reducer.find_unused_parameters = true;
  std::vector<torch::Tensor> got(2);
  run_ranks(2, [&](int r, ProcessGroup& pg) { got[size_t(r)] = run(r, pg, o); });
  EXPECT_TRUE(torch::equal(got[0], torch::full({4}, 0.5f))) << got[0];  // (1 + 0) / 2
  EXPECT_TRUE(torch::equal(got[1], got[0]));
}

// A parameter that gets no gradient in a backward is reduced with what its .grad() holds, or
// zeros when it has none (as PyTorch's DDP), never with what its bucket slice kept from the
// step before: the slice holds the last average when .grad() was set to none, and staged (a
// module on a GPU; here bucket_view false) it was never copied in. Step 0: both ranks use
// `spare` (bias gradient 1 on each); step 1, after zero_grad, only rank 0 does: (1 + 0) / 2.
class TorchDdpUnused : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(TorchDdpUnused, ContributesZerosNotTheLastStepsAverage) {
  const auto [bucket_view, set_to_none] = GetParam();
  Data data = make_data(8);
  auto nets = make_nets(2, 10, /*unused=*/true);
  std::vector<torch::Tensor> got(2);
  run_ranks(2, [&](int r, ProcessGroup& pg) {
    Net& net = nets[size_t(r)];
    DdpOptions o;
    o.reducer.find_unused_parameters = true;
    TorchDdp ddp(*net, pg, o, {.gradient_as_bucket_view = bucket_view});
    for (int step = 0; step < 2; ++step) {
      net->zero_grad(set_to_none);
      auto loss = torch::nn::functional::cross_entropy(ddp.forward(net, data.x), data.y);
      if (step == 0 || r == 0) loss = loss + net->spare->forward(torch::ones({1, 4})).sum();
      loss.backward();
    }
    const torch::Tensor& g = net->spare->bias.grad();
    got[size_t(r)] = g.defined() ? g.clone() : torch::full({4}, -1.0f);  // -1: none
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(torch::equal(got[size_t(r)], torch::full({4}, 0.5f)))
        << "rank " << r << ": spare.bias.grad() = " << got[size_t(r)];
}

INSTANTIATE_TEST_SUITE_P(BucketViewSetToNone, TorchDdpUnused,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

// On a group that reads one GPU's memory in place (nccl), a module on another GPU is named
// (on every rank: the constructor agrees on it as on wrap_problem's findings) rather than
// handed to NCCL; a module on the group's GPU, or on the CPU, is fine.
TEST(TorchDdp, AModuleOnAnotherGpuThanTheGroupsIsNamed) {
  using lockstep::torch::device_problem;
  EXPECT_EQ(device_problem(c10::Device(c10::kCPU), "nccl", 0), "");
  EXPECT_EQ(device_problem(c10::Device(c10::kCUDA, 1), "nccl", 1), "");
  const std::string m = device_problem(c10::Device(c10::kCUDA, 0), "nccl", 1);
  EXPECT_NE(m.find("the module is on cuda:0 but this rank's nccl group reads the memory of cuda:1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("LOCKSTEP_NCCL_DEVICE=0"), std::string::npos) << m;
}

}  // namespace
