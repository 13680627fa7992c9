// One worker of the DDP training benchmark: fmnist-mlp or fmnist-cnn, SGD momentum,
// one compute thread, a fixed per-worker batch. Ranks meet through a FileStore; run.py
// starts 1 or 2 of these (and the PyTorch peer) and turns their JSON lines into a table.
//
//   ddp_bench --model fmnist-cnn --rank 0 --world 2 --store /tmp/s [--batch 64] [--steps 100]
//             [--warmup 20] [--overlap 1] [--data DIR|synthetic] [--first-bucket-kb 1024]
//             [--bucket-cap-kb 25600] [--hook allreduce] [--shared-gradients 1]
// LOCKSTEP_TIMELINE=trace.json writes the timeline (per rank) for the overlap figure.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <string>

#include "lockstep/comm/process_group.h"
#include "lockstep/core/error.h"
#include "lockstep/data/idx.h"
#include "lockstep/ddp/ddp.h"
#include "lockstep/nn/blas.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/nn/optim.h"
#include "lockstep/store/file_store.h"

namespace {
using namespace lockstep;

struct Args {
  std::map<std::string, std::string> kv;
  std::string get(const std::string& k, const std::string& def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : it->second;
  }
  int64_t num(const std::string& k, int64_t def) const { return std::stoll(get(k, std::to_string(def))); }
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strncmp(argv[i], "--", 2) != 0) LOCKSTEP_THROW(ConfigError, "unexpected argument '", argv[i], "'");
    a.kv[argv[i] + 2] = argv[i + 1];
  }
  return a;
}

// This rank's share of the training images as floats (or synthetic ones of the same shape).
struct Shard {
  std::vector<float> x;
  std::vector<int32_t> y;
  int64_t n = 0;
};

Shard load_shard(const std::string& data, int rank, int world, int64_t want) {
  Shard s;
  s.n = want;
  s.x.resize(size_t(want) * 784);
  s.y.resize(size_t(want));
  if (data == "synthetic") {
    for (size_t i = 0; i < s.x.size(); ++i) s.x[i] = float((i * 2654435761u) % 255) / 255.0f;
    for (int64_t i = 0; i < want; ++i) s.y[size_t(i)] = int32_t(i % 10);
    return s;
  }
  data::Dataset d = data::load_mnist(data, data::Split::train);
  const int64_t per = d.size() / world;
  for (int64_t i = 0; i < want; ++i) {
    const int64_t idx = rank * per + i % per;
    d.copy_features(idx, std::span<float>(s.x.data() + i * 784, 784));
    s.y[size_t(i)] = d.label(idx);
  }
  return s;
}

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

int run(const Args& a) {
  const std::string model_name = a.get("model", "fmnist-cnn");
  const int rank = int(a.num("rank", 0)), world = int(a.num("world", 1));
  const int64_t batch = a.num("batch", 64), steps = a.num("steps", 100), warmup = a.num("warmup", 20);
  nn::set_num_threads(1);
  store::FileStore store(a.get("store", "/tmp/lockstep-ddp-bench-store"), std::chrono::seconds(120));
  comm::Options po;
  po.timeout = std::chrono::seconds(120);
  auto pg = comm::ProcessGroup::create("native", store, rank, world, po);

  auto model = nn::make_model(model_name, 1);
  ddp::DdpOptions opt;
  opt.reducer.overlap = a.num("overlap", 1) != 0;
  opt.reducer.buckets.first_bucket_bytes = size_t(a.num("first-bucket-kb", 1024)) << 10;
  opt.reducer.buckets.bucket_cap_bytes = size_t(a.num("bucket-cap-kb", 25600)) << 10;
  opt.comm_hook = a.get("hook", "allreduce");
  opt.shared_gradients = a.num("shared-gradients", 1) != 0;
  opt.timeout = std::chrono::seconds(120);
  ddp::DistributedDataParallel ddp(*model, *pg, opt);
  nn::Sgd sgd(*model, {.lr = 0.01f, .momentum = 0.9f});
  nn::CrossEntropyLoss ce;

  Shard shard = load_shard(a.get("data", "/usr/share/datasets/fashion-mnist"), rank, world, 160 * batch);
  nn::Tensor x({batch, 1, 28, 28});
  int64_t cursor = 0;
  float loss = 0;
  auto step = [&] {
    if ((cursor + 1) * batch > shard.n) cursor = 0;
    std::memcpy(x.data(), shard.x.data() + cursor * batch * 784, size_t(batch) * 784 * sizeof(float));
    std::span<const int32_t> y(shard.y.data() + cursor * batch, size_t(batch));
    ++cursor;
    model->zero_grad();
    loss = ce.forward(ddp.forward(x), y);
    ddp.backward(ce.backward());
    ddp.step(sgd);
  };
  for (int64_t i = 0; i < warmup; ++i) step();
  pg->barrier().wait(std::chrono::seconds(120));
  const ddp::ReducerStats s0 = ddp.reducer().stats();
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = cpu_seconds();
  for (int64_t i = 0; i < steps; ++i) step();
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - c0;
  const ddp::ReducerStats s1 = ddp.reducer().stats();
  pg->barrier().wait(std::chrono::seconds(120));
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("{\"impl\":\"lockstep\",\"model\":\"%s\",\"world\":%d,\"rank\":%d,\"batch\":%lld,\"steps\":%lld,"
              "\"elapsed_s\":%.6f,\"cpu_s\":%.6f,\"samples_per_s\":%.2f,\"comm_ms_per_step\":%.4f,"
              "\"wait_ms_per_step\":%.4f,\"buckets\":%zu,\"overlap\":%d,\"loss\":%.5f,\"peak_rss_mib\":%.1f}\n",
              model_name.c_str(), world, rank, (long long)batch, (long long)steps, el, cpu, double(steps * batch) / el,
              (s1.comm_us - s0.comm_us) / 1e3 / double(steps), (s1.wait_us - s0.wait_us) / 1e3 / double(steps),
              ddp.reducer().plan().size(), opt.reducer.overlap ? 1 : 0, loss, double(ru.ru_maxrss) / 1024.0);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddp_bench: %s\n", e.what());
    return 1;
  }
}
