// DataLoader: batches of a Dataset in the order a DistributedSampler gives, assembled on a
// background thread `prefetch` batches ahead. Batch buffers are allocated once and reused.
// Augmentation is seeded per sample, so the batches do not depend on thread timing, and a
// loader started from a saved SamplerState yields exactly the batches an uninterrupted run
// would have.
//
//   DataLoader loader(train, DistributedSampler({.dataset_size = train.size(), .rank = r,
//                                                .world_size = w, .seed = 1}),
//                     {.batch_size = 64, .transform = {.mean = {0.286f}, .std = {0.353f}}});
//   for (int64_t e = 0; e < epochs; ++e) {
//     loader.set_epoch(e);
//     while (const Batch* b = loader.next()) step(b->features(), b->labels());
//   }
//   save(loader.state());   // ... later: loader.load_state(saved) continues the epoch
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "lockstep/data/dataset.h"
#include "lockstep/data/sampler.h"
#include "lockstep/data/transform.h"

namespace lockstep::data {

inline constexpr int kMaxPrefetch = 256;

struct DataLoaderOptions {
  int64_t batch_size = 32;
  int prefetch = 2;        // batches assembled ahead; 0 assembles in next() on the caller
  bool drop_last = false;  // skip this rank's final partial batch
  TransformOptions transform;
  // Extra per-sample work on the worker thread after the built-in transforms (custom
  // augmentation). An exception it throws reaches the caller of next().
  std::function<void(int64_t sample_index, std::span<float> features)> sample_hook;
  // next() waiting longer than this for one batch is a TimeoutError.
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
};

class Batch {
 public:
  int64_t size() const { return size_; }
  // [B, sample shape...], e.g. [B, C, H, W] for images or [B, T] for text.
  const std::vector<int64_t>& shape() const { return shape_; }
  std::span<const float> features() const {
    return {features_.data(), static_cast<size_t>(size_ * numel_)};
  }
  // B * targets_per_sample targets ([B] class labels, [B, T] next-token targets).
  std::span<const int32_t> labels() const {
    return {labels_.data(), static_cast<size_t>(size_ * targets_)};
  }
  std::span<const int64_t> indices() const { return {indices_.data(), static_cast<size_t>(size_)}; }
  int64_t epoch() const { return epoch_; }

 private:
  friend class DataLoader;
  std::vector<float> features_;
  std::vector<int32_t> labels_;
  std::vector<int64_t> indices_;
  std::vector<int64_t> shape_;
  int64_t size_ = 0, numel_ = 0, targets_ = 0, epoch_ = 0;
};

class DataLoader {
 public:
  // `data` must outlive the loader; the sampler's dataset_size must equal data.size().
  DataLoader(const Dataset& data, DistributedSampler sampler, DataLoaderOptions opts);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Starts `epoch` from its beginning.
  void set_epoch(int64_t epoch);
  // Continues from a saved position (see SamplerState).
  void load_state(const SamplerState& state);
  // The position after the last batch next() returned: what a checkpoint saves.
  SamplerState state() const { return sampler_.state(); }

  // The next batch of the epoch, or nullptr at its end. Valid until the next call of
  // next(), set_epoch(), load_state() or the destructor. Rethrows a worker's exception.
  const Batch* next();
  // Batches left in the current epoch, counting from the last one returned.
  int64_t batches_left() const { return total_batches_ - delivered_; }
  const DistributedSampler& sampler() const { return sampler_; }

 private:
  // A fixed-capacity FIFO of slot numbers (no allocation after construction).
  struct SlotQueue {
    std::vector<int> ring;
    size_t head = 0, count = 0;
    void reset(size_t cap) {
      ring.assign(cap, -1);
      head = count = 0;
    }
    void push(int s) { ring[(head + count++) % ring.size()] = s; }
    int pop() {
      int s = ring[head];
      head = (head + 1) % ring.size();
      --count;
      return s;
    }
  };

  void begin_epoch();
  void stop_worker();
  void worker_main();
  void fill(Batch& b, int64_t batch_number) const;
  const Batch* hand_out(int slot);

  const Dataset& data_;
  DistributedSampler sampler_;
  DataLoaderOptions opts_;
  SampleTransform transform_;

  std::vector<Batch> slots_;
  int64_t first_position_ = 0;  // sampler position where this run of batches started
  int64_t total_batches_ = 0;
  int64_t delivered_ = 0;
  bool started_ = false;
  int handed_ = -1;  // slot the caller holds

  std::mutex mu_;
  std::condition_variable cv_;  // slot freed, batch ready, error, stop
  SlotQueue free_, ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace lockstep::data
