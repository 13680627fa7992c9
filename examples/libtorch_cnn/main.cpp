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
#include <optional>
#include <string>
#include <thread>

#include "lockstep/comm/backends/registry.h"
#include "lockstep/data/data_loader.h"
#include "lockstep/data/idx.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/store/rendezvous.h"
#include "lockstep/torch/checkpoint.h"
#include "lockstep/torch/ddp.h"
#include "lockstep/torch/sampler.h"
#include "torch_models.h"

using lockstep_examples::FmnistCnn;  // examples/common/torch_models.h, shared with bench/torch

// Fashion-MNIST (lockstep's IDX reader) as a torch::data dataset whose batches are stacked in
// one pass: normalised images [B, 1, 28, 28] and int64 labels.
struct Images : torch::data::datasets::BatchDataset<Images, torch::data::Example<>> {
  explicit Images(lockstep::data::Dataset d) : d_(std::move(d)) {}
  torch::data::Example<> get_batch(c10::ArrayRef<size_t> idx) override {
    const int64_t n = int64_t(idx.size()), numel = d_.sample_numel();
    auto x = torch::empty({n, 1, d_.height(), d_.width()});
    auto y = torch::empty({n}, torch::kLong);
    for (int64_t k = 0; k < n; ++k) {
      d_.copy_features(int64_t(idx[size_t(k)]), {x.data_ptr<float>() + k * numel, size_t(numel)});
      y.data_ptr<int64_t>()[k] = d_.label(int64_t(idx[size_t(k)]));
    }
    return {x.sub_(0.286f).div_(0.353f), y};
  }
  torch::optional<size_t> size() const override { return size_t(d_.size()); }
  lockstep::data::Dataset d_;
};

lockstep::data::Dataset load(lockstep::data::Split split, const std::string& dir) {
  auto found = dir.empty() ? lockstep::data::find_fashion_mnist_dir() : std::optional(dir);
  if (!found)
    throw std::runtime_error("Fashion-MNIST not found: apt-get install dataset-fashion-mnist");
  return lockstep::data::load_mnist(*found, split);
}

// A lockstep batch as torch tensors (copies: the loader reuses its buffers).
std::pair<torch::Tensor, torch::Tensor> to_torch(const lockstep::data::Batch& b) {
  auto x = torch::from_blob(const_cast<float*>(b.features().data()), b.shape()).clone();
  auto y = torch::from_blob(const_cast<int32_t*>(b.labels().data()), {int64_t(b.labels().size())},
                            torch::kInt)
               .to(torch::kLong);
  return {x, y};
}

struct Flags {
  int64_t epochs = 1, max_steps = -1, checkpoint_every = 0;
  int threads = 0;
  std::string data_dir, checkpoint_dir, device = "cpu", backend = "native";
};

Flags parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--epochs")
      f.epochs = std::atoll(v.c_str());
    else if (k == "--steps")
      f.max_steps = std::atoll(v.c_str());  // stop early (tests)
    else if (k == "--threads")
      f.threads = std::atoi(v.c_str());
    else if (k == "--data-dir")
      f.data_dir = v;
    else if (k == "--checkpoint-dir")
      f.checkpoint_dir = v;
    else if (k == "--checkpoint-every")
      f.checkpoint_every = std::atoll(v.c_str());
    else if (k == "--device")
      f.device = v;  // cpu, cuda or cuda:N
    else if (k == "--backend")
      f.backend = v;  // native (default), nccl, gloo, mpi: lockstep's process group
    else
      throw std::runtime_error("unknown option " + k + " (see examples/README.md)");
  }
  return f;
}

int main(int argc, char** argv) try {
  // No `using namespace lockstep;`: lockstep::torch would make `torch::` ambiguous.
  namespace comm = lockstep::comm;
  namespace data = lockstep::data;
  namespace lt = lockstep::torch;
  const Flags f = parse(argc, argv);
  lockstep::DistEnv env =
      lockstep::read_dist_env();  // RANK, WORLD_SIZE, MASTER_ADDR... as `lockstep run` sets them
  torch::set_num_threads(f.threads > 0 ? f.threads
                                       : int(std::max(1u, std::thread::hardware_concurrency() /
                                                              unsigned(env.local_world_size))));
  auto store = lockstep::store::connect_store(env, std::chrono::seconds(60));
  comm::register_builtin_backends();
  auto pg = comm::ProcessGroup::create(f.backend, *store, env.rank, env.world_size);

  torch::manual_seed(uint64_t(env.rank));  // different on each rank: DDP copies rank 0's
  FmnistCnn net;
  // On a GPU the gradient buckets stay on it with --backend nccl, else they are staged
  // through lockstep's host buckets (ddp.h); the summary line says which (grads=).
  const torch::Device device(f.device);
  net->to(device);
  lt::DistributedDataParallel ddp(*net, *pg);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));

  Images train(load(data::Split::train, f.data_dir));
  lt::DistributedSampler sampler({.dataset_size = int64_t(*train.size()),
                                  .rank = env.rank,
                                  .world_size = env.world_size,
                                  .seed = 1});
  auto loader = torch::data::make_data_loader(std::move(train), sampler,
                                              torch::data::DataLoaderOptions(64).workers(0));
  // Under `lockstep run --max-restarts N` a restarted job continues from its newest checkpoint
  // (the same on every rank: rank 0 writes them, all ranks read).
  int64_t step = 0;
  if (!f.checkpoint_dir.empty())
    if (auto m = lt::load_latest_checkpoint(f.checkpoint_dir, "libtorch-cnn", *net, opt)) {
      step = m->step;
      sampler.load_state(data::SamplerState::parse(m->state.at("sampler").get<std::string>()));
      if (env.rank == 0)
        std::fprintf(stderr, "libtorch_cnn: resumed from %s at step %lld\n",
                     f.checkpoint_dir.c_str(), (long long)step);
    }
  auto save = [&] {
    if (env.rank != 0 || f.checkpoint_dir.empty()) return;
    lockstep::train::CheckpointSave c;
    c.model = "libtorch-cnn";
    c.step = step;
    c.epoch = sampler.epoch();
    c.world_size = env.world_size;
    c.state["sampler"] = sampler.state().to_string();
    lt::save_checkpoint(f.checkpoint_dir, std::move(c), *net, opt);
  };
  int64_t samples = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t epoch = sampler.epoch(); epoch < f.epochs && step != f.max_steps; ++epoch) {
    sampler.set_epoch(epoch);  // keeps a resumed position within this epoch
    for (auto& b : *loader) {
      net->zero_grad(/*set_to_none=*/false);  // keeps .grad() the bucket views (ddp.h)
      torch::nn::functional::cross_entropy(ddp.forward(net, b.data.to(device)),
                                           b.target.to(device))
          .backward();  // averaged on return
      ddp.step(opt);
      samples += b.data.size(0);
      if (++step % std::max<int64_t>(f.checkpoint_every, 1) == 0 && f.checkpoint_every > 0) save();
      if (step == f.max_steps) break;
    }
  }
  if (f.checkpoint_every <= 0 || step % f.checkpoint_every != 0) save();  // the final state
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Test accuracy: each rank counts its shard (every sample once), then one all-reduce.
  net->eval();
  torch::NoGradGuard no_grad;
  data::Dataset test = load(data::Split::test, f.data_dir);
  data::DataLoaderOptions lo;
  lo.batch_size = 500;
  lo.transform.mean = {0.286f};
  lo.transform.std = {0.353f};
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
    tally[0] += net->forward(x.to(device)).argmax(1).eq(y.to(device)).sum().item<int64_t>();
    tally[1] += int64_t(b->size());
  }
  pg->allreduce(std::span<int64_t>(tally), comm::ReduceOp::sum).wait();
  ddp.verify_replicas(step);  // throws if not
  if (env.rank == 0)
    std::printf(
        "libtorch_cnn: %d workers, %lld steps, samples/s=%.0f, test_acc=%.4f (%lld samples), "
        "grads=%s, replicas identical\n",
        env.world_size, (long long)step, double(tally[2]) / secs,
        double(tally[0]) / double(tally[1]), (long long)tally[1],
        ddp.params().staged() ? "staged" : ddp.params().grads_device().str().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "libtorch_cnn: %s\n", e.what());
  return 1;
}
