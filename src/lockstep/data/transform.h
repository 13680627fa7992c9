// Per-sample transforms applied while a batch is assembled: u8 -> float, normalisation
// (x - mean[c]) / std[c], and the usual CIFAR/MNIST augmentation (random crop from a
// zero-padded image, horizontal flip). Random choices come from an Rng seeded by
// (seed, epoch, sample index), so a sample looks the same whichever thread builds it and
// whenever a run is resumed.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "lockstep/data/dataset.h"

namespace lockstep::data {

struct TransformOptions {
  // Per channel (or one value for every channel); empty = no normalisation. Images are
  // scaled to [0, 1] first, so these are in that unit (Fashion-MNIST: 0.2860 / 0.3530).
  std::vector<float> mean;
  std::vector<float> std;
  int crop_padding = 0;  // > 0: random crop of the image padded by this many zero pixels
  bool horizontal_flip = false;
  uint64_t seed = 0;
};

class SampleTransform {
 public:
  // InvalidArgument when the options do not fit the dataset (e.g. augmentation of tokens).
  SampleTransform(const Dataset& data, const TransformOptions& opts);
  // Writes sample `index` of `epoch` into out (data.sample_numel() floats).
  void apply(int64_t index, int64_t epoch, std::span<float> out) const;

 private:
  void apply_image(int64_t index, int64_t epoch, std::span<float> out) const;

  const Dataset& data_;
  TransformOptions opts_;
  std::vector<float> scale_, shift_;  // per channel: out = raw * scale + shift
};

}  // namespace lockstep::data
