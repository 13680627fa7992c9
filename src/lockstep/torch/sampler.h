// lockstep::torch::DistributedSampler: lockstep's data::DistributedSampler (shards by rank,
// shuffles by (seed, epoch), resumable from a sample offset) as a torch::data sampler, for
// any torch::data dataset and its DataLoader.
//
//   lockstep::torch::DistributedSampler sampler({.dataset_size = n, .rank = r,
//                                                .world_size = w, .seed = 1});
//   auto loader = torch::data::make_data_loader(dataset, sampler, batch_size);
//   sampler.load_state(saved);                    // optional: resume mid-epoch
//   for (int64_t e = saved.epoch; e < epochs; ++e) {
//     sampler.set_epoch(e);                       // keeps a resumed offset of epoch e
//     for (auto& batch : *loader) { ...; saved = sampler.state(); }
//   }
//
// torch's make_data_loader keeps its own copy of the sampler. Copies of this one share their
// position (a handle), so set_epoch, load_state and state on your copy act on the loader's.
// The epoch starts (or the resumed position is applied) when the loader begins an epoch
// (Sampler::reset). state() is lockstep's SamplerState: `offset` counts samples consumed by
// all ranks together, so a checkpoint resumes under another world size as well.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <torch/data/samplers/base.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "lockstep/core/error.h"
#include "lockstep/data/sampler.h"
#include "lockstep/torch/compat.h"

namespace lockstep::torch {

class DistributedSampler final : public ::torch::data::samplers::Sampler<> {
 public:
  explicit DistributedSampler(const data::SamplerOptions& opt)
      : s_(std::make_shared<Shared>(opt)) {}

  // The epoch the next pass of the loader reads. A position loaded for this epoch
  // (load_state) is kept; one loaded for another epoch is dropped.
  void set_epoch(int64_t epoch) {
    s_->epoch = epoch;
    if (s_->pending && s_->pending->epoch != epoch) s_->pending.reset();
  }
  int64_t epoch() const { return s_->epoch; }
  // The next pass of the loader continues from `state` (checked against this dataset's size
  // and seed when applied: data::DataError).
  void load_state(const data::SamplerState& state) {
    s_->pending = state;
    s_->epoch = state.epoch;
  }
  // Where the loader is: the samples of all its batches handed out so far.
  data::SamplerState state() const {
    if (s_->pending) return *s_->pending;
    return s_->sampler.state();
  }

  void reset(compat::optional<size_t> new_size = compat::nullopt) override {
    if (new_size && int64_t(*new_size) != s_->sampler.options().dataset_size) {
      data::SamplerOptions o = s_->sampler.options();
      o.dataset_size = int64_t(*new_size);
      s_->sampler = data::DistributedSampler(o);
    }
    if (s_->pending) {
      s_->sampler.load_state(*s_->pending);
      s_->pending.reset();
    } else {
      s_->sampler.set_epoch(s_->epoch);
    }
  }

  compat::optional<std::vector<size_t>> next(size_t batch_size) override {
    std::vector<int64_t> idx(batch_size);
    const int64_t n = s_->sampler.next(idx);
    if (n == 0) return compat::nullopt;
    return std::vector<size_t>(idx.begin(), idx.begin() + n);
  }

  // torch::save(sampler) / torch::load: the state as int64 [epoch, offset, dataset_size,
  // seed bits, shuffle].
  void save(::torch::serialize::OutputArchive& archive) const override {
    const data::SamplerState st = state();
    archive.write("lockstep_sampler_state", ::torch::tensor({st.epoch, st.offset, st.dataset_size,
                                                             int64_t(st.seed), int64_t(st.shuffle)},
                                                            ::torch::kLong));
  }
  void load(::torch::serialize::InputArchive& archive) override {
    at::Tensor t;
    archive.read("lockstep_sampler_state", t);
    if (t.numel() != 5)
      LOCKSTEP_THROW(DataError,
                     "lockstep::torch::DistributedSampler::load: the archive's "
                     "lockstep_sampler_state holds ",
                     t.numel(), " values, not 5 (not saved by this sampler?)");
    const auto v = t.to(::torch::kLong).contiguous();
    const int64_t* p = v.data_ptr<int64_t>();
    load_state({.epoch = p[0],
                .offset = p[1],
                .dataset_size = p[2],
                .seed = uint64_t(p[3]),
                .shuffle = p[4] != 0});
  }

 private:
  struct Shared {
    explicit Shared(const data::SamplerOptions& o) : sampler(o) {}
    data::DistributedSampler sampler;
    int64_t epoch = 0;
    std::optional<data::SamplerState> pending;
  };
  std::shared_ptr<Shared> s_;
};

}  // namespace lockstep::torch
