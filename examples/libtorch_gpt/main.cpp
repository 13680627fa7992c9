// libtorch_gpt: a small causal transformer (lockstep's char-gpt shape, 3.2 M parameters) in
// torch::nn, trained on the characters of a text file on every worker with
// lockstep::torch::DistributedDataParallel: plain loss.backward() and optimizer.step().
//   lockstep run --nproc-per-node 2 -- ./libtorch_gpt --steps 200      (see examples/README.md)
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>

#include "lockstep/comm/backends/registry.h"
#include "lockstep/data/sampler.h"
#include "lockstep/ddp/replica_check.h"
#include "lockstep/store/rendezvous.h"
#include "lockstep/torch/ddp.h"
#include "torch_models.h"
#include "torch_text.h"

namespace {

struct Flags {
  int64_t steps = 200, batch = 16;
  double lr = 1e-3;
  std::string data = "/usr/share/common-licenses/GPL-3";  // plain ASCII on every Debian
  lockstep_examples::CharGptConfig model;
};

Flags parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc)
      throw std::invalid_argument("libtorch_gpt: flag " + a +
                                  " needs a value; flags: --steps N "
                                  "--batch N --lr X --data FILE --dim N --layers N --heads N");
    const char* v = argv[++i];
    if (a == "--steps")
      f.steps = std::atoll(v);
    else if (a == "--batch")
      f.batch = std::atoll(v);
    else if (a == "--lr")
      f.lr = std::atof(v);
    else if (a == "--data")
      f.data = v;
    else if (a == "--dim")
      f.model.dim = std::atoll(v);
    else if (a == "--layers")
      f.model.layers = std::atoll(v);
    else if (a == "--heads")
      f.model.heads = std::atoll(v);
    else
      throw std::invalid_argument("libtorch_gpt: unknown flag " + a);
  }
  if (f.steps < 1 || f.batch < 1 || f.model.dim % f.model.heads != 0)
    throw std::invalid_argument(
        "libtorch_gpt: need --steps >= 1, --batch >= 1, --dim divisible by --heads");
  return f;
}

}  // namespace

int main(int argc, char** argv) try {
  // No `using namespace lockstep;`: lockstep::torch would make `torch::` ambiguous.
  namespace comm = lockstep::comm;
  namespace data = lockstep::data;
  namespace ex = lockstep_examples;
  const Flags f = parse(argc, argv);
  lockstep::DistEnv env = lockstep::read_dist_env();  // as `lockstep run` sets it
  torch::set_num_threads(
      int(std::max(1u, std::thread::hardware_concurrency() / unsigned(env.local_world_size))));
  auto store = lockstep::store::connect_store(env, std::chrono::seconds(60));
  comm::register_builtin_backends();
  auto pg = comm::ProcessGroup::create("native", *store, env.rank, env.world_size);

  const ex::TextWindows text = ex::load_text_windows(f.data, f.model.block, f.model.vocab);
  torch::manual_seed(uint64_t(env.rank));  // different on each rank: DDP copies rank 0's
  ex::CharGpt net(f.model);
  lockstep::torch::DistributedDataParallel ddp(*net, *pg);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(f.lr).weight_decay(0.0));

  data::DistributedSampler sampler({.dataset_size = text.train_x.size(0),
                                    .rank = env.rank,
                                    .world_size = env.world_size,
                                    .seed = 1});
  std::vector<int64_t> idx(size_t(f.batch));
  int64_t samples = 0, epoch = 0;
  sampler.set_epoch(epoch);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < f.steps; ++step) {
    int64_t k = sampler.next(idx);
    if (k == 0) {  // every rank's shard has the same length (Remainder::pad)
      sampler.set_epoch(++epoch);
      k = sampler.next(idx);
    }
    const auto ids = torch::from_blob(idx.data(), {k}, torch::kLong);
    net->zero_grad(/*set_to_none=*/false);  // keeps .grad() the bucket views (ddp.h)
    ex::gpt_loss(ddp.forward(net, text.train_x.index_select(0, ids)),
                 text.train_y.index_select(0, ids))
        .backward();  // averaged on return
    ddp.step(opt);
    samples += k;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Held-out loss: each rank sums its strided share of the windows, then one all-reduce.
  torch::NoGradGuard no_grad;
  net->eval();
  double tally[3] = {0.0, 0.0, double(samples)};  // loss sum, windows, trained windows
  const int64_t n_val = text.val_x.size(0);
  for (int64_t i = env.rank; i < n_val; i += int64_t(env.world_size) * 64) {
    const auto sel = torch::arange(i, std::min(n_val, i + int64_t(env.world_size) * 64),
                                   env.world_size, torch::kLong);
    tally[0] +=
        ex::gpt_loss(net->forward(text.val_x.index_select(0, sel)), text.val_y.index_select(0, sel))
            .item<double>() *
        double(sel.size(0));
    tally[1] += double(sel.size(0));
  }
  pg->allreduce(std::span<double>(tally), comm::ReduceOp::sum).wait();
  ddp.verify_replicas(f.steps);  // throws if not
  if (env.rank == 0)
    std::printf(
        "libtorch_gpt: %d workers, %lld steps, %lld parameters, samples/s=%.1f, val_loss=%.4f "
        "(%lld windows of %lld), replicas identical\n",
        env.world_size, (long long)f.steps, (long long)ex::count_parameters(*net), tally[2] / secs,
        tally[0] / std::max(tally[1], 1.0), (long long)tally[1], (long long)f.model.block);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "libtorch_gpt: %s\n", e.what());
  return 1;
}
