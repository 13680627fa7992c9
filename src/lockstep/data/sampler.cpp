#include "lockstep/data/sampler.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <numeric>

#include "lockstep/core/error.h"
#include "lockstep/data/rng.h"

namespace lockstep::data {

std::string SamplerState::to_string() const {
  return str_cat("epoch=", epoch, " offset=", offset, " dataset_size=", dataset_size,
                 " seed=", seed, " shuffle=", shuffle ? 1 : 0);
}

SamplerState SamplerState::parse(const std::string& text) {
  SamplerState s;
  long long epoch = 0, offset = 0, size = 0;
  unsigned long long seed = 0;
  int shuffle = 0, used = 0;
  const int got =
      std::sscanf(text.c_str(), "epoch=%lld offset=%lld dataset_size=%lld seed=%llu shuffle=%d%n",
                  &epoch, &offset, &size, &seed, &shuffle, &used);
  if (got != 5 || static_cast<size_t>(used) != text.size() || epoch < 0 || offset < 0 || size < 0 ||
      (shuffle != 0 && shuffle != 1)) {
    LOCKSTEP_THROW(DataError, "sampler state '", text,
                   "' is malformed (expected 'epoch=E offset=O dataset_size=N seed=S shuffle=0|1' "
                   "with non-negative numbers); the checkpoint sidecar is damaged, resume from "
                   "an older checkpoint");
  }
  s.epoch = epoch;
  s.offset = offset;
  s.dataset_size = size;
  s.seed = seed;
  s.shuffle = shuffle == 1;
  return s;
}

DistributedSampler::DistributedSampler(const SamplerOptions& opts) : opts_(opts) {
  if (opts.dataset_size < 0) {
    LOCKSTEP_THROW(InvalidArgument, "DistributedSampler: dataset_size must be >= 0, got ",
                   opts.dataset_size);
  }
  if (opts.world_size < 1 || opts.rank < 0 || opts.rank >= opts.world_size) {
    LOCKSTEP_THROW(InvalidArgument,
                   "DistributedSampler: need 0 <= rank < world_size, got rank=", opts.rank,
                   " world_size=", opts.world_size);
  }
  permute();
  compute_shard();
}

void DistributedSampler::permute() {
  perm_.clear();
  if (!opts_.shuffle) {
    return;
  }
  perm_.resize(static_cast<size_t>(opts_.dataset_size));
  std::iota(perm_.begin(), perm_.end(), int64_t{0});
  Rng rng(mix_seed(opts_.seed, static_cast<uint64_t>(epoch_)));
  fisher_yates(std::span<int64_t>(perm_), rng);
}

// The shard is every W-th global position from start_ + rank. The epoch ends at
//   pad:   start + ceil((N - start) / W) * W   (positions >= N wrap to the front)
//   drop:  start + floor((N - start) / W) * W
//   exact: N
// Measured from start_, so a resume with another world size splits only what is left.
void DistributedSampler::compute_shard() {
  const int64_t n = opts_.dataset_size;
  const int64_t w = opts_.world_size;
  const int64_t left = std::max<int64_t>(0, n - start_);
  switch (opts_.remainder) {
    case Remainder::pad:
      shard_size_ = (left + w - 1) / w;
      break;
    case Remainder::drop:
      shard_size_ = left / w;
      break;
    case Remainder::exact:
      shard_size_ = std::max<int64_t>(0, (left - opts_.rank + w - 1) / w);
      break;
  }
  position_ = 0;
}

void DistributedSampler::set_epoch(int64_t epoch) {
  if (epoch < 0) {
    LOCKSTEP_THROW(InvalidArgument, "DistributedSampler: epoch must be >= 0, got ", epoch);
  }
  if (epoch != epoch_) {
    epoch_ = epoch;
    permute();
  }
  start_ = 0;
  compute_shard();
}

void DistributedSampler::load_state(const SamplerState& st) {
  if (st.dataset_size != opts_.dataset_size || st.seed != opts_.seed ||
      st.shuffle != opts_.shuffle) {
    LOCKSTEP_THROW(DataError, "cannot resume sampler: saved state (", st.to_string(),
                   ") was made for dataset_size=", st.dataset_size, " seed=", st.seed,
                   " shuffle=", st.shuffle, " but this run has dataset_size=", opts_.dataset_size,
                   " seed=", opts_.seed, " shuffle=", opts_.shuffle,
                   "; resume with the same data and seed, or start a fresh run");
  }
  if (st.epoch < 0 || st.offset < 0) {
    LOCKSTEP_THROW(DataError, "cannot resume sampler: negative epoch or offset in ",
                   st.to_string());
  }
  set_epoch(st.epoch);
  start_ = st.offset;
  compute_shard();
}

SamplerState DistributedSampler::state() const {
  return SamplerState{epoch_, start_ + position_ * opts_.world_size, opts_.dataset_size, opts_.seed,
                      opts_.shuffle};
}

void DistributedSampler::seek(int64_t k) {
  if (k < 0 || k > shard_size_) {
    LOCKSTEP_THROW(InvalidArgument, "DistributedSampler::seek(", k, "): position must be in [0, ",
                   shard_size_, "]");
  }
  position_ = k;
}

int64_t DistributedSampler::index_at(int64_t k) const {
  LOCKSTEP_CHECK(k >= 0 && k < shard_size_, "index_at(", k, ") outside shard of ", shard_size_);
  const int64_t n = opts_.dataset_size;
  int64_t g = start_ + opts_.rank + k * opts_.world_size;
  // Padding repeats the permutation from its front, as PyTorch does (possibly several
  // times over when N < W).
  if (g >= n) {
    g = (g - n) % n;
  }
  return opts_.shuffle ? perm_[static_cast<size_t>(g)] : g;
}

int64_t DistributedSampler::next(std::span<int64_t> out) {
  const int64_t k = std::min<int64_t>(static_cast<int64_t>(out.size()), remaining());
  for (int64_t i = 0; i < k; ++i) {
    out[static_cast<size_t>(i)] = index_at(position_ + i);
  }
  position_ += k;
  return k;
}

std::vector<int64_t> DistributedSampler::shard() const {
  std::vector<int64_t> v(static_cast<size_t>(shard_size_));
  for (int64_t k = 0; k < shard_size_; ++k) {
    v[static_cast<size_t>(k)] = index_at(k);
  }
  return v;
}

}  // namespace lockstep::data
