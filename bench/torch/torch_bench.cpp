// LibTorch training throughput, one program for the three C++ sides of bench/torch/run.py:
//   --mode plain      LibTorch alone: no process group, no DDP (world size 1, or each of two
//                     independent workers run at once: the machine's ceiling)
//   --mode ddp        lockstep::torch::DistributedDataParallel (buckets, overlap, grads as
//                     views into bucket storage)
//   --mode baseline   pytorch/examples cpp/distributed/dist-mnist.cpp's approach, written here:
//                     after loss.backward(), all-reduce each parameter's gradient one by one
//                     (lockstep's ProcessGroup, blocking, no buckets, no overlap), divide by
//                     the world size, then optimizer.step()
// Models (examples/common/torch_models.h): fmnist-cnn on Fashion-MNIST (SGD, momentum 0.9),
// gpt, lockstep's char-gpt shape at 3.2 M parameters on a text file (AdamW). One compute
// thread per worker. Run under `lockstep run`; each rank prints one JSON line: rates, and
// where a step goes (forward, backward, ddp's final wait or the baseline's all-reduces, context
// switches, CPU of the compute thread and of the rest; bench/torch/ab.py compares them).
// --overlap 0|1, --shared-grads 0|1 and --first-bucket-kb N set ddp's DdpOptions.
//   lockstep run --nproc-per-node 2 -- torch_bench --mode ddp --model gpt --steps 30
#include <torch/torch.h>

#include <sys/resource.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <map>
#include <memory>
#include <string>

#include "lockstep/comm/backends/registry.h"
#include "lockstep/data/idx.h"
#include "lockstep/store/rendezvous.h"
#include "lockstep/torch/ddp.h"
#include "torch_models.h"
#include "torch_text.h"

namespace {
namespace ex = lockstep_examples;

struct Flags {
  std::string mode = "ddp", model = "fmnist-cnn", data;
  int64_t batch = 0, warmup = 5, steps = 30;
  // ddp only, for finding where time goes: -1 = lockstep's default.
  int64_t overlap = -1, shared_grads = -1, first_bucket_kb = -1;
};

Flags parse(int argc, char** argv) {
  Flags f;
  const std::map<std::string, std::string*> text = {
      {"--mode", &f.mode}, {"--model", &f.model}, {"--data", &f.data}};
  const std::map<std::string, int64_t*> number = {{"--batch", &f.batch},
                                                  {"--warmup", &f.warmup},
                                                  {"--steps", &f.steps},
                                                  {"--overlap", &f.overlap},
                                                  {"--shared-grads", &f.shared_grads},
                                                  {"--first-bucket-kb", &f.first_bucket_kb}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto t = text.find(a);
    const auto n = number.find(a);
    if (t == text.end() && n == number.end())
      throw std::invalid_argument("unknown flag " + a +
                                  "; flags: --mode plain|ddp|baseline --model fmnist-cnn|gpt "
                                  "--batch N --warmup N --steps N --data PATH; ddp: --overlap 0|1 "
                                  "--shared-grads 0|1 --first-bucket-kb N");
    if (i + 1 >= argc) throw std::invalid_argument("flag " + a + " needs a value");
    const char* v = argv[++i];
    if (t != text.end())
      *t->second = v;
    else
      *n->second = std::atoll(v);
  }
  if (f.mode != "plain" && f.mode != "ddp" && f.mode != "baseline")
    throw std::invalid_argument("--mode " + f.mode + ": use plain, ddp or baseline");
  if (f.model != "fmnist-cnn" && f.model != "gpt")
    throw std::invalid_argument("--model " + f.model + ": use fmnist-cnn or gpt");
  if (f.batch == 0) f.batch = f.model == "gpt" ? 16 : 64;
  return f;
}

double cpu_seconds(clockid_t clock = CLOCK_PROCESS_CPUTIME_ID) {
  timespec t{};
  clock_gettime(clock, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// This process's context switches so far (all its threads): voluntary (waits) and not.
rusage usage() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u;
}

// This rank's inputs and targets: a contiguous shard of the training set (images as
// normalised floats, or text windows), preloaded so that no step waits for data.
std::pair<torch::Tensor, torch::Tensor> load_shard(const Flags& f, int rank, int world) {
  if (f.model == "gpt") {
    const auto t =
        ex::load_text_windows(f.data.empty() ? "/usr/share/common-licenses/GPL-3" : f.data, 64, 96);
    const int64_t per = t.train_x.size(0) / world;
    return {t.train_x.slice(0, rank * per, (rank + 1) * per),
            t.train_y.slice(0, rank * per, (rank + 1) * per)};
  }
  auto dir = f.data.empty() ? lockstep::data::find_fashion_mnist_dir() : f.data;
  if (!dir)
    throw std::runtime_error("Fashion-MNIST not found: apt-get install dataset-fashion-mnist");
  const auto d = lockstep::data::load_mnist(*dir, lockstep::data::Split::train);
  const int64_t per = std::min<int64_t>(d.size() / world, 160 * f.batch);
  auto x = torch::empty({per, 1, 28, 28});
  auto y = torch::empty({per}, torch::kLong);
  for (int64_t i = 0; i < per; ++i) {
    const int64_t j = rank * (d.size() / world) + i;
    d.copy_features(j, {x[i].data_ptr<float>(), 784});
    y[i] = int64_t(d.label(j));
  }
  return {x.sub_(0.286).div_(0.353), y};
}

}  // namespace

int main(int argc, char** argv) try {
  namespace comm = lockstep::comm;
  const Flags f = parse(argc, argv);
  at::set_num_threads(1);
  const lockstep::DistEnv env = lockstep::read_dist_env();
  std::unique_ptr<lockstep::store::Store> store;
  std::unique_ptr<comm::ProcessGroup> pg;
  int world = 1;  // plain: each process trains alone, on its own shard
  if (f.mode != "plain") {
    store = lockstep::store::connect_store(env, std::chrono::seconds(60));
    comm::register_builtin_backends();
    pg = comm::ProcessGroup::create("native", *store, env.rank, env.world_size);
    world = env.world_size;
  }
  const auto [x, y] = load_shard(f, env.rank, env.world_size);

  torch::manual_seed(1);  // the same initial weights everywhere (dist-mnist.cpp does this)
  std::shared_ptr<torch::nn::Module> net;
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> loss_of;
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (f.model == "gpt") {
    ex::CharGpt g;
    net = g.ptr();
    loss_of = [g](const torch::Tensor& a, const torch::Tensor& b) mutable {
      return ex::gpt_loss(g->forward(a), b);
    };
    opt = std::make_unique<torch::optim::AdamW>(g->parameters(),
                                                torch::optim::AdamWOptions(1e-3).weight_decay(0.0));
  } else {
    ex::FmnistCnn c;
    net = c.ptr();
    loss_of = [c](const torch::Tensor& a, const torch::Tensor& b) mutable {
      return torch::nn::functional::cross_entropy(c->forward(a), b);
    };
    opt = std::make_unique<torch::optim::SGD>(c->parameters(),
                                              torch::optim::SGDOptions(0.01).momentum(0.9));
  }
  std::unique_ptr<lockstep::torch::DistributedDataParallel> ddp;
  if (f.mode == "ddp") {
    lockstep::ddp::DdpOptions o;
    if (f.overlap >= 0) o.reducer.overlap = f.overlap != 0;
    if (f.shared_grads >= 0) o.shared_gradients = f.shared_grads != 0;
    if (f.first_bucket_kb >= 0)
      o.reducer.buckets.first_bucket_bytes = size_t(f.first_bucket_kb) << 10;
    ddp = std::make_unique<lockstep::torch::DistributedDataParallel>(*net, *pg, o);
  }
  const auto params = net->parameters();

  int64_t cursor = 0;
  const int64_t batches = x.size(0) / f.batch;
  if (batches < 1) throw std::runtime_error("fewer samples per rank than --batch");
  torch::Tensor loss;
  double comm_s = 0;            // baseline: wall time in its all-reduces (nothing overlaps them)
  double fwd_s = 0, bwd_s = 0;  // forward + loss; backward (ddp: with its final wait)
  auto step = [&] {
    const int64_t s = (cursor++ % batches) * f.batch;
    net->zero_grad(/*set_to_none=*/false);  // as 1.13's opt.zero_grad(); 2.x's sets none
    const auto f0 = std::chrono::steady_clock::now();
    loss = loss_of(x.slice(0, s, s + f.batch), y.slice(0, s, s + f.batch));
    const auto f1 = std::chrono::steady_clock::now();
    loss.backward();  // ddp: averaged on return
    const auto f2 = std::chrono::steady_clock::now();
    fwd_s += std::chrono::duration<double>(f1 - f0).count();
    bwd_s += std::chrono::duration<double>(f2 - f1).count();
    if (f.mode == "baseline") {
      const auto c0 = std::chrono::steady_clock::now();
      for (const auto& p : params) {  // dist-mnist.cpp: one blocking all-reduce per gradient
        auto g = p.grad();
        pg->allreduce(g.data_ptr<float>(), size_t(g.numel()), lockstep::DType::f32,
                      comm::ReduceOp::sum)
            .wait();
        g.div_(double(world));
      }
      comm_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
    }
    opt->step();
  };
  for (int64_t i = 0; i < f.warmup; ++i) step();
  if (pg) pg->barrier().wait();
  comm_s = fwd_s = bwd_s = 0;
  const double ddp_wait0 = ddp ? ddp->reducer().stats().wait_us : 0;
  const rusage r0 = usage();
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = cpu_seconds(), m0 = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
  for (int64_t i = 0; i < f.steps; ++i) step();
  const double cpu = cpu_seconds() - c0, main_cpu = cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - m0;
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const rusage r1 = usage();
  const double ddp_wait_s = ddp ? 1e-6 * (ddp->reducer().stats().wait_us - ddp_wait0) : 0;
  if (pg) pg->barrier().wait();
  std::printf(
      "{\"impl\": \"libtorch-%s\", \"model\": \"%s\", \"world\": %d, \"rank\": %d, \"batch\": "
      "%lld, "
      "\"steps\": %lld, \"elapsed_s\": %.6f, \"cpu_s\": %.6f, \"main_cpu_s\": %.6f, "
      "\"samples_per_s\": %.3f, "
      "\"comm_s\": %.6f, \"fwd_s\": %.6f, \"bwd_s\": %.6f, \"ddp_wait_s\": %.6f, "
      "\"vcsw\": %ld, \"ivcsw\": %ld, \"loss\": %.6f, \"params\": %lld}\n",
      f.mode.c_str(), f.model.c_str(), world, env.rank, (long long)f.batch, (long long)f.steps, el,
      cpu, main_cpu, double(f.steps * f.batch) / el, comm_s, fwd_s, bwd_s, ddp_wait_s,
      r1.ru_nvcsw - r0.ru_nvcsw, r1.ru_nivcsw - r0.ru_nivcsw, loss.item<double>(),
      (long long)ex::count_parameters(*net));
  std::fflush(stdout);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "torch_bench: %s\n", e.what());
  return 1;
}
