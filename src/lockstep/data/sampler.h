// DistributedSampler: which sample indices rank r of W reads in an epoch, like PyTorch's
// DistributedSampler. Every epoch is a permutation of [0, N) seeded by (seed, epoch); the
// ranks take it strided (rank r reads global positions r, r+W, r+2W, ...), so at any
// step the ranks together have consumed one prefix of the permutation.
//
//   DistributedSampler s({.dataset_size = n, .rank = r, .world_size = w, .seed = 42});
//   s.set_epoch(e);
//   while (int64_t k = s.next(batch_indices)) { ... }
//   SamplerState st = s.state();   // save in a checkpoint; s.load_state(st) resumes
//
// Remainder modes: `pad` repeats the first indices of the permutation so that every rank
// gets ceil(N/W) samples; `drop` gives floor(N/W) and skips the tail; `exact` (evaluation)
// neither pads nor drops, so ranks may differ by one and every sample is read once.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lockstep::data {

enum class Remainder : uint8_t { pad, drop, exact };

struct SamplerOptions {
  int64_t dataset_size = 0;
  int rank = 0;
  int world_size = 1;
  bool shuffle = true;
  uint64_t seed = 0;
  Remainder remainder = Remainder::pad;
};

// The position of a sampler, for checkpoints. `offset` counts global positions of the
// epoch already consumed by all ranks together (rank position * world size), which stays
// meaningful when a run resumes with a different world size.
struct SamplerState {
  int64_t epoch = 0;
  int64_t offset = 0;
  // Checked on load: resuming against another dataset or seed would silently change data.
  int64_t dataset_size = 0;
  uint64_t seed = 0;
  bool shuffle = true;

  bool operator==(const SamplerState&) const = default;
  std::string to_string() const;  // "epoch=3 offset=1200 dataset_size=60000 seed=42 shuffle=1"
  static SamplerState parse(const std::string& text);  // inverse of to_string; DataError
};

class DistributedSampler {
 public:
  explicit DistributedSampler(const SamplerOptions& opts);

  // Starts an epoch from its beginning (re-permutes when the epoch changes).
  void set_epoch(int64_t epoch);
  // Continues a saved position; the world size may differ from the one that saved it.
  void load_state(const SamplerState& state);
  SamplerState state() const;

  // Moves to position k of this rank's shard in the current epoch (0 <= k <= shard_size()).
  void seek(int64_t k);
  // Writes up to out.size() next indices and advances; returns how many (0 at epoch end).
  int64_t next(std::span<int64_t> out);

  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }
  // Indices this rank reads from the current start (epoch begin or loaded offset) to the end.
  int64_t shard_size() const { return shard_size_; }
  int64_t remaining() const { return shard_size_ - position_; }
  // The k-th index of this rank's shard (0 <= k < shard_size()).
  int64_t index_at(int64_t k) const;
  // The whole shard from the current start, for tests and inspection.
  std::vector<int64_t> shard() const;

  const SamplerOptions& options() const { return opts_; }

 private:
  void permute();
  void compute_shard();

  SamplerOptions opts_;
  int64_t epoch_ = 0;
  int64_t start_ = 0;  // global position where this rank's shard was cut from
  int64_t position_ = 0;
  int64_t shard_size_ = 0;
  std::vector<int64_t> perm_;  // the epoch's permutation (empty when not shuffling)
};

}  // namespace lockstep::data
