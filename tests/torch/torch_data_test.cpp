// lockstep::torch::DistributedSampler with torch::data's DataLoader: the ranks' shards of an
// epoch are disjoint and cover the dataset, epochs are reshuffled by seed, and a loader
// resumed from a saved state (state() or torch::save) reads what the uninterrupted one did.
// lockstep::torch checkpoints: a module and optimizer saved and loaded continue bitwise as
// if never interrupted; another model or architecture is refused, naming it.
#include <gtest/gtest.h>
#include <torch/data.h>
#include <torch/nn.h>
#include <torch/optim.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "lockstep/core/error.h"
#include "lockstep/torch/checkpoint.h"
#include "lockstep/torch/sampler.h"

namespace {

using lockstep::data::Remainder;
using lockstep::data::SamplerOptions;
using Sampler = lockstep::torch::DistributedSampler;

// A dataset whose batch is the indices it was asked for.
struct Indices : torch::data::datasets::BatchDataset<Indices, torch::Tensor> {
  explicit Indices(size_t n) : n_(n) {}
  torch::Tensor get_batch(c10::ArrayRef<size_t> idx) override {
    std::vector<int64_t> v(idx.begin(), idx.end());
    return torch::tensor(v, torch::kLong);
  }
  torch::optional<size_t> size() const override { return n_; }
  size_t n_;
};

auto loader_for(size_t n, const Sampler& sampler, size_t batch) {
  return torch::data::make_data_loader(Indices(n), sampler,
                                       torch::data::DataLoaderOptions(batch).workers(0));
}

// The indices of `batches` batches of the loader's next pass (all when batches < 0).
template <class Loader>
std::vector<int64_t> read(Loader& loader, int batches = -1) {
  std::vector<int64_t> out;
  for (auto& b : *loader) {
    out.insert(out.end(), b.template data_ptr<int64_t>(),
               b.template data_ptr<int64_t>() + b.numel());
    if (--batches == 0) break;  // before the loop's ++ asks the sampler for the next batch
  }
  return out;
}

SamplerOptions options(int rank, int world, Remainder rem = Remainder::pad) {
  return {.dataset_size = 103, .rank = rank, .world_size = world, .seed = 7, .remainder = rem};
}

TEST(TorchSampler, ShardsAreDisjointAndCoverTheDatasetEachEpoch) {
  const int world = 3;
  std::vector<int64_t> first_epoch;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> all;
    for (int r = 0; r < world; ++r) {
      Sampler s(options(r, world, Remainder::exact));
      auto loader = loader_for(103, s, 8);
      s.set_epoch(epoch);
      auto mine = read(loader);
      EXPECT_EQ(mine.size(), size_t(r < 103 % world ? 35 : 34)) << "rank " << r;
      all.insert(all.end(), mine.begin(), mine.end());
    }
    if (epoch == 0)
      first_epoch = all;
    else
      EXPECT_NE(all, first_epoch) << "epoch 1 read in epoch 0's order: no reshuffle by epoch";
    std::sort(all.begin(), all.end());
    std::vector<int64_t> expected(103);
    for (int64_t i = 0; i < 103; ++i) expected[size_t(i)] = i;
    EXPECT_EQ(all, expected) << "epoch " << epoch << ": shards overlap or miss samples";
  }
  // pad (the default): equal shards, ceil(103 / 3) = 35 each, still covering every sample.
  std::vector<int64_t> all;
  for (int r = 0; r < world; ++r) {
    Sampler s(options(r, world));
    auto loader = loader_for(103, s, 8);
    auto mine = read(loader);
    EXPECT_EQ(mine.size(), 35u) << "rank " << r;
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  EXPECT_EQ(all.size(), 103u);
}

TEST(TorchSampler, ResumeReadsWhatTheUninterruptedLoaderRead) {
  Sampler whole(options(1, 2));
  auto wl = loader_for(103, whole, 5);
  whole.set_epoch(3);
  const auto epoch3 = read(wl);
  whole.set_epoch(4);
  const auto epoch4 = read(wl);

  Sampler first(options(1, 2));
  auto fl = loader_for(103, first, 5);
  first.set_epoch(3);
  const auto head = read(fl, 4);  // 4 batches of 5, then "killed"
  ASSERT_EQ(head, std::vector<int64_t>(epoch3.begin(), epoch3.begin() + 20));
  const auto saved = first.state();
  EXPECT_EQ(saved.epoch, 3);
  EXPECT_EQ(saved.offset, 40) << "20 samples of this rank = 40 of both ranks";
  std::stringstream archive;
  torch::save(first, archive);

  for (int how = 0; how < 2; ++how) {  // from state(), and from torch::save's archive
    Sampler resumed(options(1, 2));
    auto rl = loader_for(103, resumed, 5);
    if (how == 0) {
      resumed.load_state(saved);
    } else {
      archive.seekg(0);
      torch::load(resumed, archive);
    }
    resumed.set_epoch(3);  // the training loop's own call keeps the resumed offset
    auto tail = read(rl);
    EXPECT_EQ(tail, std::vector<int64_t>(epoch3.begin() + 20, epoch3.end())) << "how " << how;
    resumed.set_epoch(4);
    EXPECT_EQ(read(rl), epoch4) << "how " << how;
  }
}

TEST(TorchSampler, StateOfAnotherDatasetIsRefused) {
  Sampler s(options(0, 2));
  auto loader = loader_for(103, s, 5);
  auto st = s.state();
  st.dataset_size = 50;
  s.load_state(st);
  EXPECT_THROW(read(loader), lockstep::DataError);
}

torch::nn::Sequential small_net(int64_t hidden) {
  return torch::nn::Sequential(torch::nn::Linear(6, hidden), torch::nn::Tanh(),
                               torch::nn::BatchNorm1d(hidden), torch::nn::Linear(hidden, 3));
}

void train_steps(torch::nn::Sequential& net, torch::optim::Optimizer& opt, int from, int n) {
  for (int s = from; s < from + n; ++s) {
    torch::manual_seed(uint64_t(100 + s));
    auto x = torch::randn({8, 6});
    opt.zero_grad();
    net->forward(x).pow(2).mean().backward();
    opt.step();
  }
}

std::vector<torch::Tensor> state_of(torch::nn::Sequential& net) {
  std::vector<torch::Tensor> out;
  for (auto& t : net->parameters()) out.push_back(t.detach().clone());
  for (auto& t : net->buffers()) out.push_back(t.detach().clone());
  return out;
}

TEST(TorchCheckpoint, ResumedModelAndOptimizerContinueBitwise) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("lockstep-torch-ckpt-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  torch::manual_seed(1);
  auto net = small_net(5);
  torch::optim::Adam opt(net->parameters(), 0.01);
  train_steps(net, opt, 0, 3);
  lockstep::train::CheckpointSave c;
  c.model = "small";
  c.step = 3;
  c.state["note"] = "kept";
  lockstep::torch::save_checkpoint(dir, c, *net, opt);
  train_steps(net, opt, 3, 3);  // the uninterrupted run

  torch::manual_seed(2);  // other weights, fresh optimizer: everything comes from the file
  auto again = small_net(5);
  torch::optim::Adam opt2(again->parameters(), 0.01);
  auto m = lockstep::torch::load_latest_checkpoint(dir, "small", *again, opt2);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->step, 3);
  EXPECT_EQ(m->state["note"], "kept");
  train_steps(again, opt2, 3, 3);
  auto a = state_of(net), b = state_of(again);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::equal(a[i], b[i])) << "tensor " << i << " differs after the resume";

  auto other = small_net(7);  // another architecture
  torch::optim::Adam opt3(other->parameters(), 0.01);
  try {
    lockstep::torch::load_latest_checkpoint(dir, "small", *other, opt3);
    ADD_FAILURE() << "a checkpoint of another architecture was loaded";
  } catch (const lockstep::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor '0.weight' is of another dtype or shape"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(lockstep::torch::load_latest_checkpoint(dir, "big", *again, opt2),
               lockstep::DataError);
  EXPECT_FALSE(lockstep::torch::load_latest_checkpoint(dir / "none", "small", *again, opt2));
  std::filesystem::remove_all(dir);
}

}  // namespace
