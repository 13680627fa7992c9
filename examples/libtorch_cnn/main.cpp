// libtorch_cnn: a LibTorch (torch::nn) model trained on every worker with
// lockstep::torch::DistributedDataParallel: plain loss.backward() and optimizer.step().
//   lockstep run --nproc-per-node 2 -- ./libtorch_cnn --epochs 1     (see examples/README.md)
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "lockstep/comm/backends/registry.h"
#include "lockstep/data/data_loader.h"
#include "lockstep/data/idx.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/store/rendezvous.h"
#include "lockstep/torch/ddp.h"

// lockstep's fmnist-cnn architecture, in torch::nn.
struct FmnistCnnImpl : torch::nn::Module {
  FmnistCnnImpl() {
    conv1 =
        register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3).padding(1)));
    conv2 =
        register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)));
    fc1 = register_module("fc1", torch::nn::Linear(3136, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2->forward(x)), 2);
    return fc2->forward(torch::relu(fc1->forward(x.flatten(1))));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(FmnistCnn);

lockstep::data::Dataset load(lockstep::data::Split split) {
  auto dir = lockstep::data::find_fashion_mnist_dir();
  if (!dir)
    throw std::runtime_error("Fashion-MNIST not found: apt-get install dataset-fashion-mnist");
  return lockstep::data::load_mnist(*dir, split);
}

// A lockstep batch as torch tensors (copies: the loader reuses its buffers).
std::pair<torch::Tensor, torch::Tensor> to_torch(const lockstep::data::Batch& b) {
  auto x = torch::from_blob(const_cast<float*>(b.features().data()), b.shape()).clone();
  auto y = torch::from_blob(const_cast<int32_t*>(b.labels().data()), {int64_t(b.labels().size())},
                            torch::kInt)
               .to(torch::kLong);
  return {x, y};
}

int main(int argc, char** argv) try {
  // No `using namespace lockstep;`: lockstep::torch would make `torch::` ambiguous.
  namespace comm = lockstep::comm;
  namespace data = lockstep::data;
  int64_t epochs = 1, max_steps = -1;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--epochs")) epochs = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--steps"))
      max_steps = std::atoll(argv[i + 1]);  // stop early (tests)
  }
  lockstep::DistEnv env =
      lockstep::read_dist_env();  // RANK, WORLD_SIZE, MASTER_ADDR... as `lockstep run` sets them
  torch::set_num_threads(
      int(std::max(1u, std::thread::hardware_concurrency() / unsigned(env.local_world_size))));
  auto store = lockstep::store::connect_store(env, std::chrono::seconds(60));
  comm::register_builtin_backends();
  auto pg = comm::ProcessGroup::create("native", *store, env.rank, env.world_size);

  torch::manual_seed(uint64_t(env.rank));  // different on each rank: DDP copies rank 0's
  FmnistCnn net;
  lockstep::torch::DistributedDataParallel ddp(*net, *pg);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));

  data::Dataset train = load(data::Split::train), test = load(data::Split::test);
  data::DataLoaderOptions lo;
  lo.batch_size = 64;
  lo.transform.mean = {0.286f};
  lo.transform.std = {0.353f};
  data::DataLoader loader(train,
                          data::DistributedSampler({.dataset_size = train.size(),
                                                    .rank = env.rank,
                                                    .world_size = env.world_size,
                                                    .seed = 1}),
                          lo);
  int64_t steps = 0, samples = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t epoch = 0; epoch < epochs && steps != max_steps; ++epoch) {
    loader.set_epoch(epoch);
    for (const data::Batch* b; steps != max_steps && (b = loader.next()); ++steps) {
      auto [x, y] = to_torch(*b);
      opt.zero_grad();
      torch::nn::functional::cross_entropy(ddp.forward(net, x), y)
          .backward();  // averaged on return
      ddp.step(opt);
      samples += int64_t(b->size());
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Test accuracy: each rank counts its shard (every sample once), then one all-reduce.
  net->eval();
  torch::NoGradGuard no_grad;
  lo.batch_size = 500;
  data::DataLoader tl(test,
                      data::DistributedSampler({.dataset_size = test.size(),
                                                .rank = env.rank,
                                                .world_size = env.world_size,
                                                .shuffle = false,
                                                .remainder = data::Remainder::exact}),
                      lo);
  int64_t tally[3] = {0, 0, samples};  // correct, seen, trained samples
  while (const data::Batch* b = tl.next()) {
    auto [x, y] = to_torch(*b);
    tally[0] += net->forward(x).argmax(1).eq(y).sum().item<int64_t>();
    tally[1] += int64_t(b->size());
  }
  pg->allreduce(std::span<int64_t>(tally), comm::ReduceOp::sum).wait();
  lockstep::ddp::verify_replicas_identical(*pg, ddp.params(), steps,
                                           std::chrono::seconds(60));  // throws if not
  if (env.rank == 0)
    std::printf(
        "libtorch_cnn: %d workers, %lld steps, samples/s=%.0f, test_acc=%.4f (%lld samples), "
        "replicas identical\n",
        env.world_size, (long long)steps, double(tally[2]) / secs,
        double(tally[0]) / double(tally[1]), (long long)tally[1]);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "libtorch_cnn: %s\n", e.what());
  return 1;
}
