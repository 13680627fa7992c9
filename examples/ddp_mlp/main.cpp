// ddp_mlp: your own model, trained on every worker with lockstep's DistributedDataParallel.
//   lockstep run --nproc-per-node 2 -- ./ddp_mlp --steps 300     (see examples/README.md)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "lockstep/comm/backends/registry.h"
#include "lockstep/data/data_loader.h"
#include "lockstep/data/idx.h"
#include "lockstep/ddp/ddp.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/nn/layers.h"
#include "lockstep/nn/loss.h"
#include "lockstep/store/rendezvous.h"

using namespace lockstep;

// The model: a perceptron with two hidden layers for 28x28 images of 10 classes.
std::unique_ptr<nn::Module> make_mlp() {
  auto net = std::make_unique<nn::Sequential>();
  net->emplace<nn::Flatten>().emplace<nn::Linear>(784, 128).emplace<nn::ReLU>();
  net->emplace<nn::Linear>(128, 64).emplace<nn::ReLU>().emplace<nn::Linear>(64, 10);
  return net;
}

// Fashion-MNIST when installed; otherwise noisy images whose class brightens every 10th pixel.
data::Dataset load(data::Split split, bool say) {
  if (auto dir = data::find_fashion_mnist_dir()) return data::load_mnist(*dir, split);
  if (say) std::printf("Fashion-MNIST not found (apt install dataset-fashion-mnist): synthetic data\n");
  int64_t n = split == data::Split::train ? 6000 : 1000;
  std::vector<float> x(static_cast<size_t>(n * 784));
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[size_t(i)] = int32_t(i * 7 % 10);
    for (int64_t j = 0; j < 784; ++j)
      x[size_t(i * 784 + j)] = float((i * 7919 + j * 104729) % 1000) / 2000.0f + (j % 10 == y[size_t(i)]);
  }
  return data::Dataset::from_f32("synthetic", {1, 28, 28}, std::move(x), std::move(y), 1, 10);
}

int main(int argc, char** argv) try {
  int64_t steps = 300;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoll(argv[i + 1]);
  DistEnv env = read_dist_env();  // RANK, WORLD_SIZE, MASTER_ADDR... as `lockstep run` sets them
  auto store = store::connect_store(env, std::chrono::seconds(60));
  comm::register_builtin_backends();  // "native" always; mpi, gloo, nccl when built in
  auto pg = comm::ProcessGroup::create("native", *store, env.rank, env.world_size);

  nn::Model model(make_mlp(), /*seed=*/42);
  ddp::DistributedDataParallel ddp(model, *pg);  // every rank starts from rank 0's weights
  nn::Sgd opt(model, {.lr = 0.05f, .momentum = 0.9f});
  nn::CrossEntropyLoss ce;
  data::Dataset train = load(data::Split::train, env.rank == 0), test = load(data::Split::test, false);
  data::DataLoaderOptions lo;
  lo.batch_size = 64;
  lo.transform.mean = {0.286f};
  lo.transform.std = {0.353f};
  data::DataLoader loader(train, data::DistributedSampler({.dataset_size = train.size(), .rank = env.rank,
                                                           .world_size = env.world_size, .seed = 1}), lo);
  nn::Tensor x;
  auto as_tensor = [&x](const data::Batch& b) -> const nn::Tensor& {
    x.resize(nn::Shape(std::span(b.shape())));
    std::ranges::copy(b.features(), x.data());
    return x;
  };
  float loss = 0.0f;
  for (int64_t step = 0, epoch = 0; step < steps; ++epoch) {
    loader.set_epoch(epoch);  // a new shuffle, split across the ranks
    for (const data::Batch* b; step < steps && (b = loader.next()); ++step) {
      model.zero_grad();
      loss = ce.forward(ddp.forward(as_tensor(*b)), b->labels());
      ddp.backward(ce.backward());  // returns with gradients averaged over the ranks
      ddp.step(opt);
    }
  }
  // Test accuracy: each rank counts its shard (every sample once), then one all-reduce.
  model.eval();
  lo.batch_size = 500;
  data::DataLoader tl(test, data::DistributedSampler({.dataset_size = test.size(), .rank = env.rank,
      .world_size = env.world_size, .shuffle = false, .remainder = data::Remainder::exact}), lo);
  int64_t tally[2] = {0, 0};  // correct, seen
  while (const data::Batch* b = tl.next()) {
    ce.forward(model.forward(as_tensor(*b)), b->labels());
    tally[0] += ce.correct(), tally[1] += b->size();
  }
  pg->allreduce(std::span<int64_t>(tally), comm::ReduceOp::sum).wait();
  pg->allreduce(std::span<float>(&loss, 1), comm::ReduceOp::avg).wait();
  ddp::verify_replicas_identical(*pg, ddp.params(), steps, std::chrono::seconds(60));  // throws if not
  if (env.rank == 0)
    std::printf("ddp_mlp: %d workers, %lld steps: final loss %.4f, test accuracy %.2f%% (%lld samples), "
                "replicas identical\n", env.world_size, (long long)steps, loss,
                100.0 * double(tally[0]) / double(tally[1]), (long long)tally[1]);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ddp_mlp: %s\n", e.what());
  return 1;
}
