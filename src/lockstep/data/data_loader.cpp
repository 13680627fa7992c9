#include "lockstep/data/data_loader.h"

#include <algorithm>

#include "lockstep/core/error.h"

namespace lockstep::data {

DataLoader::DataLoader(const Dataset& data, DistributedSampler sampler, DataLoaderOptions opts)
    : data_(data),
      sampler_(std::move(sampler)),
      opts_(std::move(opts)),
      transform_(data, opts_.transform) {
  if (opts_.batch_size < 1) {
    LOCKSTEP_THROW(InvalidArgument, "DataLoader: batch_size must be >= 1, got ", opts_.batch_size);
  }
  if (opts_.prefetch < 0 || opts_.prefetch > kMaxPrefetch) {
    LOCKSTEP_THROW(InvalidArgument, "DataLoader: prefetch must be in [0, ", kMaxPrefetch, "], got ",
                   opts_.prefetch);
  }
  if (sampler_.options().dataset_size != data.size()) {
    LOCKSTEP_THROW(InvalidArgument, "DataLoader: the sampler was made for ",
                   sampler_.options().dataset_size, " samples but dataset '", data.name(), "' has ",
                   data.size());
  }
  // prefetch batches in flight plus the one the caller holds.
  slots_.resize(static_cast<size_t>(std::max(opts_.prefetch, 1)) + 1);
  for (Batch& b : slots_) {
    b.numel_ = data.sample_numel();
    b.targets_ = data.targets_per_sample();
    b.features_.resize(static_cast<size_t>(opts_.batch_size * b.numel_));
    b.labels_.resize(static_cast<size_t>(opts_.batch_size * b.targets_));
    b.indices_.resize(static_cast<size_t>(opts_.batch_size));
    b.shape_.push_back(0);
    b.shape_.insert(b.shape_.end(), data.sample_shape().begin(), data.sample_shape().end());
  }
}

DataLoader::~DataLoader() {
  stop_worker();
}

void DataLoader::set_epoch(int64_t epoch) {
  stop_worker();
  sampler_.set_epoch(epoch);
}

void DataLoader::load_state(const SamplerState& state) {
  stop_worker();
  sampler_.load_state(state);
}

// Fixes the batches of this run (from the sampler's current position to the epoch end)
// and starts the worker on them.
void DataLoader::begin_epoch() {
  first_position_ = sampler_.position();
  const int64_t left = sampler_.remaining();
  total_batches_ =
      opts_.drop_last ? left / opts_.batch_size : (left + opts_.batch_size - 1) / opts_.batch_size;
  delivered_ = 0;
  handed_ = -1;
  free_.reset(slots_.size());
  ready_.reset(slots_.size());
  for (size_t s = 0; s < slots_.size(); ++s) {
    free_.push(static_cast<int>(s));
  }
  error_ = nullptr;
  stop_ = false;
  started_ = true;
  if (opts_.prefetch > 0 && total_batches_ > 0) {
    worker_ = std::thread([this] { worker_main(); });
  }
}

void DataLoader::stop_worker() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) {
    worker_.join();
  }
  started_ = false;
  handed_ = -1;
}

void DataLoader::fill(Batch& b, int64_t batch_number) const {
  const int64_t pos = first_position_ + batch_number * opts_.batch_size;
  const int64_t n = std::min(opts_.batch_size, sampler_.shard_size() - pos);
  const auto numel = static_cast<size_t>(b.numel_);
  const auto targets = static_cast<size_t>(b.targets_);
  b.size_ = n;
  b.shape_[0] = n;
  b.epoch_ = sampler_.epoch();
  for (int64_t k = 0; k < n; ++k) {
    const auto i = static_cast<size_t>(k);
    const int64_t index = sampler_.index_at(pos + k);
    b.indices_[i] = index;
    std::span<float> out(b.features_.data() + i * numel, numel);
    transform_.apply(index, sampler_.epoch(), out);
    if (opts_.sample_hook) {
      opts_.sample_hook(index, out);
    }
    auto t = data_.targets(index);
    std::copy(t.begin(), t.end(), b.labels_.begin() + static_cast<std::ptrdiff_t>(i * targets));
  }
}

// The worker fills free slots in batch order; an exception ends it and is handed to the
// caller after the batches completed before it.
void DataLoader::worker_main() {
  for (int64_t bn = 0; bn < total_batches_; ++bn) {
    int slot;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || free_.count > 0; });
      if (stop_) {
        return;
      }
      slot = free_.pop();
    }
    try {
      fill(slots_[static_cast<size_t>(slot)], bn);
    } catch (...) {
      std::lock_guard lk(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    {
      std::lock_guard lk(mu_);
      ready_.push(slot);
    }
    cv_.notify_all();
  }
}

const Batch* DataLoader::hand_out(int slot) {
  handed_ = slot;
  ++delivered_;
  const int64_t end =
      std::min(first_position_ + delivered_ * opts_.batch_size, sampler_.shard_size());
  // Only position_ changes here, which the worker never reads.
  sampler_.seek(end);
  return &slots_[static_cast<size_t>(slot)];
}

const Batch* DataLoader::next() {
  if (!started_) {
    begin_epoch();
  }
  if (opts_.prefetch == 0) {
    if (delivered_ == total_batches_) {
      return nullptr;
    }
    fill(slots_[0], delivered_);
    return hand_out(0);
  }
  std::unique_lock lk(mu_);
  if (handed_ >= 0) {
    free_.push(handed_);
    handed_ = -1;
    cv_.notify_all();
  }
  if (delivered_ == total_batches_) {
    return nullptr;
  }
  const bool ok = cv_.wait_for(lk, opts_.timeout, [&] { return ready_.count > 0 || error_; });
  if (ready_.count > 0) {
    return hand_out(ready_.pop());
  }
  if (error_) {
    std::rethrow_exception(error_);
  }
  if (!ok) {
    LOCKSTEP_THROW(TimeoutError, "DataLoader: batch ", delivered_, " of epoch ", sampler_.epoch(),
                   " not ready after ", opts_.timeout.count(),
                   " ms; the sample hook or the "
                   "machine is too slow, raise DataLoaderOptions::timeout");
  }
  return nullptr;
}

}  // namespace lockstep::data
