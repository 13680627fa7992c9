// DataLoader throughput on Fashion-MNIST (or synthetic 1x28x28 images when it is not
// installed): dataset load time, then samples/s of one epoch for each prefetch depth, with
// and without augmentation. The consumer only sums the batch, so this is the loader's own
// ceiling; with prefetch > 0 the assembly overlaps whatever the consumer does.
//
//   data_loader_bench [--data DIR] [--batch 64] [--world 1]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "lockstep/core/error.h"
#include "lockstep/data/data_loader.h"
#include "lockstep/data/idx.h"

using namespace lockstep::data;
using Clock = std::chrono::steady_clock;

namespace {

double secs_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

Dataset synthetic(int64_t n) {
  std::vector<uint8_t> px(static_cast<size_t>(n * 784));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 2654435761u >> 24);
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = static_cast<int32_t>(i % 10);
  return Dataset::from_u8("synthetic", FeatureKind::image_u8, {1, 28, 28}, std::move(px),
                          std::move(labels), 1, 10);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int64_t batch = 64;
  int world = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--data"))
      dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--batch"))
      batch = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--world"))
      world = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: %s [--data DIR] [--batch N] [--world W]\n", argv[0]);
      return 2;
    }
  }
  try {
    if (dir.empty()) dir = find_fashion_mnist_dir().value_or("");
    auto t0 = Clock::now();
    Dataset d = dir.empty() ? synthetic(60000) : load_mnist(dir, Split::train);
    std::printf("# dataset %s: %lld samples, loaded in %.3f s\n",
                dir.empty() ? "synthetic" : dir.c_str(), static_cast<long long>(d.size()),
                secs_since(t0));
    std::printf("%8s %8s %8s %12s %10s\n", "prefetch", "augment", "batch", "samples/s", "checksum");
    for (bool augment : {false, true}) {
      for (int prefetch : {0, 1, 2, 4}) {
        DataLoaderOptions o{.batch_size = batch,
                            .prefetch = prefetch,
                            .transform = {.mean = {0.2860f}, .std = {0.3530f}}};
        if (augment) {
          o.transform.crop_padding = 2;
          o.transform.horizontal_flip = true;
        }
        DataLoader l(d, DistributedSampler({.dataset_size = d.size(), .world_size = world}), o);
        auto t = Clock::now();
        int64_t samples = 0;
        double sum = 0;
        while (const Batch* b = l.next()) {
          samples += b->size();
          sum += b->features()[0];
        }
        std::printf("%8d %8s %8lld %12.0f %10.3f\n", prefetch, augment ? "yes" : "no",
                    static_cast<long long>(batch), static_cast<double>(samples) / secs_since(t),
                    sum);
      }
    }
  } catch (const lockstep::Error& e) {
    std::fprintf(stderr, "data_loader_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
