// Single-worker training throughput of the reference models (BENCHMARKS.md): samples/s over
// the timed steps after the warm-up, a per-layer forward/backward split from a separate
// instrumented pass, and peak resident memory. Its PyTorch twin is bench/nn/torch_peer.py;
// bench/nn/run.sh runs both and prints the ratios.
//
//   nn_train_bench --model fmnist-cnn [--batch 64] [--warmup 20] [--steps 200] [--data DIR]
#include <sys/resource.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fmnist_idx.h"
#include "lockstep/nn/blas.h"
#include "lockstep/nn/layers.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/nn/optim.h"

using namespace lockstep;
using namespace lockstep::nn;
using Clock = std::chrono::steady_clock;

// CPU time of this process: on a shared, loaded machine it tracks the work done far better
// than wall time (both are printed; the peer prints the same pair).
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

namespace {

struct Args {
  std::string model = "fmnist-cnn";
  int64_t batch = 64, warmup = 20, steps = 200, profile_steps = 30;
  std::string data = testing::kFashionMnistDir;
};

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }
double secs(double a, double b) { return b - a; }

struct Trainer {
  std::unique_ptr<Model> model;
  Sgd opt;
  CrossEntropyLoss ce;
  Tensor x;
  testing::FashionMnist& data;
  int64_t batch, cursor = 0;

  Trainer(const Args& a, testing::FashionMnist& d)
      : model(make_model(a.model, 0)), opt(*model, {.lr = 0.01f, .momentum = 0.9f}), x({a.batch, 1, 28, 28}),
        data(d), batch(a.batch) {}

  std::span<const int32_t> next_batch() {
    if ((cursor + 1) * batch > data.count) cursor = 0;
    // A view of the batch, no copy (the peer slices its tensor the same way).
    x = Tensor::wrap({data.images.data() + cursor * batch * 784, size_t(batch * 784)}, {batch, 1, 28, 28});
    return {data.labels.data() + cursor++ * batch, size_t(batch)};
  }
  float step() {
    auto y = next_batch();
    model->zero_grad();
    const float loss = ce.forward(model->forward(x), y);
    model->backward(ce.backward());
    opt.step();
    return loss;
  }
};

// Per-layer times: drive the root Sequential's children one by one with a clock around each.
void profile_layers(Trainer& t, int64_t steps) {
  auto& seq = dynamic_cast<Sequential&>(t.model->root());
  const size_t n = seq.size();
  std::vector<double> fwd(n, 0.0), bwd(n, 0.0);
  double loss_s = 0.0, opt_s = 0.0, total = 0.0;
  for (int64_t s = 0; s < steps; ++s) {
    auto y = t.next_batch();
    const auto t0 = cpu_seconds();
    t.model->zero_grad();
    const Tensor* cur = &t.x;
    for (size_t i = 0; i < n; ++i) {
      const double a = cpu_seconds();
      cur = &seq[i].forward(*cur);
      fwd[i] += secs(a, cpu_seconds());
    }
    double a = cpu_seconds();
    t.ce.forward(*cur, y);
    cur = &t.ce.backward();
    loss_s += secs(a, cpu_seconds());
    for (size_t i = n; i-- > 0;) {
      a = cpu_seconds();
      cur = &seq[i].backward(*cur);
      bwd[i] += secs(a, cpu_seconds());
      if (!seq[i].needs_input_grad()) break;  // as Sequential::backward: nothing in front needs it
    }
    a = cpu_seconds();
    t.opt.step();
    opt_s += secs(a, cpu_seconds());
    total += secs(t0, cpu_seconds());
  }
  const double k = 1e3 / double(steps);
  std::printf("  %-28s %10s %10s %7s\n", "layer", "fwd ms", "bwd ms", "share");
  for (size_t i = 0; i < n; ++i)
    std::printf("  %-28s %10.3f %10.3f %6.1f%%\n", (std::to_string(i) + " " + seq[i].describe()).c_str(), fwd[i] * k,
                bwd[i] * k, 100.0 * (fwd[i] + bwd[i]) / total);
  std::printf("  %-28s %10.3f %10s %6.1f%%\n", "loss (fused log-softmax)", loss_s * k, "", 100.0 * loss_s / total);
  std::printf("  %-28s %10.3f %10s %6.1f%%\n", "optimizer (SGD momentum)", opt_s * k, "", 100.0 * opt_s / total);
  std::printf("  %-28s %10.3f ms/step (instrumented, CPU time)\n", "total", total * k);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) LOCKSTEP_THROW(ConfigError, "flag ", f, " needs a value");
    const std::string v = argv[++i];
    if (f == "--model") a.model = v;
    else if (f == "--batch") a.batch = std::stoll(v);
    else if (f == "--warmup") a.warmup = std::stoll(v);
    else if (f == "--steps") a.steps = std::stoll(v);
    else if (f == "--profile-steps") a.profile_steps = std::stoll(v);
    else if (f == "--data") a.data = v;
    else LOCKSTEP_THROW(ConfigError, "unknown flag ", f, " (known: --model --batch --warmup --steps --profile-steps --data)");
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
  auto data = testing::load_fashion_mnist(a.data, "train", 160 * a.batch);
  Trainer t(a, data);
  for (int64_t s = 0; s < a.warmup; ++s) t.step();
  float loss = 0.0f;
  const auto t0 = Clock::now();
  const double c0 = cpu_seconds();
  for (int64_t s = 0; s < a.steps; ++s) loss = t.step();
  const double el = secs(t0, Clock::now()), cpu = cpu_seconds() - c0;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("lockstep %s batch=%lld threads=%d steps=%lld: %.1f samples/s (%.3f ms/step) cpu: %.1f samples/s "
              "loss=%.4f peak_rss=%.1f MiB\n",
              a.model.c_str(), (long long)a.batch, num_threads(), (long long)a.steps, double(a.steps * a.batch) / el,
              1e3 * el / double(a.steps), double(a.steps * a.batch) / cpu, loss, double(ru.ru_maxrss) / 1024.0);
  if (a.profile_steps > 0) profile_layers(t, a.profile_steps);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "nn_train_bench: %s\n", e.what());
  return 1;
}
