#include "lockstep/data/transform.h"

#include "lockstep/core/error.h"
#include "lockstep/data/rng.h"

namespace lockstep::data {

SampleTransform::SampleTransform(const Dataset& data, const TransformOptions& opts)
    : data_(data), opts_(opts) {
  const bool image = data.kind() != FeatureKind::token_u8 && data.sample_shape().size() == 3;
  const auto channels = static_cast<size_t>(image ? data.channels() : 1);
  const bool augment = opts.crop_padding > 0 || opts.horizontal_flip;
  if (opts.crop_padding < 0) {
    LOCKSTEP_THROW(InvalidArgument, "crop padding must be >= 0, got ", opts.crop_padding);
  }
  if (augment && !image) {
    LOCKSTEP_THROW(InvalidArgument, "dataset '", data.name(),
                   "': crop/flip augmentation needs "
                   "image samples of shape C x H x W; turn augmentation off for this dataset");
  }
  if (data.kind() == FeatureKind::token_u8 && (!opts.mean.empty() || !opts.std.empty())) {
    LOCKSTEP_THROW(InvalidArgument, "dataset '", data.name(),
                   "' holds token ids, which must not be normalised; drop mean/std");
  }
  auto per_channel = [&](const std::vector<float>& v, float dflt, const char* what) {
    if (v.empty()) {
      return std::vector<float>(channels, dflt);
    }
    if (v.size() == 1) {
      return std::vector<float>(channels, v[0]);
    }
    if (v.size() != channels) {
      LOCKSTEP_THROW(InvalidArgument, "normalisation ", what, " has ", v.size(),
                     " values but the samples have ", channels, " channels; give 1 or ", channels);
    }
    return v;
  };
  const auto mean = per_channel(opts.mean, 0.0f, "mean");
  const auto stdev = per_channel(opts.std, 1.0f, "std");
  const float raw_scale = data.kind() == FeatureKind::image_u8 ? 1.0f / 255.0f : 1.0f;
  for (size_t c = 0; c < channels; ++c) {
    if (!(stdev[c] > 0.0f)) {
      LOCKSTEP_THROW(InvalidArgument, "normalisation std[", c, "] must be > 0, got ", stdev[c]);
    }
    scale_.push_back(raw_scale / stdev[c]);
    shift_.push_back(-mean[c] / stdev[c]);
  }
}

void SampleTransform::apply(int64_t index, int64_t epoch, std::span<float> out) const {
  if (data_.sample_shape().size() == 3 && data_.kind() != FeatureKind::token_u8) {
    apply_image(index, epoch, out);
    return;
  }
  data_.copy_features(index, out);
  if (data_.kind() == FeatureKind::token_u8) {
    return;
  }
  for (float& v : out) {
    v = v * scale_[0] + shift_[0];
  }
}

// out(c, y, x) = padded(c, y + dy, x' + dx) with x' = W-1-x when flipped, where padded is
// the image framed by `p` zero pixels: the same as torchvision's RandomCrop(padding=p)
// followed by RandomHorizontalFlip, then Normalize.
void SampleTransform::apply_image(int64_t index, int64_t epoch, std::span<float> out) const {
  const int64_t ch = data_.channels(), h = data_.height(), w = data_.width();
  const int64_t p = opts_.crop_padding;
  int64_t dy = p, dx = p;  // no crop: the centre
  bool flip = false;
  if (p > 0 || opts_.horizontal_flip) {
    Rng rng(mix_seed(opts_.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index)));
    if (p > 0) {
      dy = static_cast<int64_t>(rng.below(static_cast<uint64_t>(2 * p + 1)));
      dx = static_cast<int64_t>(rng.below(static_cast<uint64_t>(2 * p + 1)));
    }
    if (opts_.horizontal_flip) {
      flip = (rng.next() >> 63) != 0;
    }
  }
  const bool is_u8 = data_.kind() == FeatureKind::image_u8;
  const uint8_t* src8 = is_u8 ? data_.u8_features(index).data() : nullptr;
  const float* srcf = is_u8 ? nullptr : data_.f32_features(index).data();
  for (int64_t c = 0; c < ch; ++c) {
    const float scale = scale_[static_cast<size_t>(c)], shift = shift_[static_cast<size_t>(c)];
    for (int64_t y = 0; y < h; ++y) {
      float* row = out.data() + (c * h + y) * w;
      const int64_t sy = y + dy - p;
      if (sy < 0 || sy >= h) {
        for (int64_t x = 0; x < w; ++x) {
          row[x] = shift;
        }
        continue;
      }
      const int64_t base = (c * h + sy) * w;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sx = (flip ? w - 1 - x : x) + dx - p;
        if (sx < 0 || sx >= w) {
          row[x] = shift;
        } else {
          const float raw = is_u8 ? static_cast<float>(src8[base + sx]) : srcf[base + sx];
          row[x] = raw * scale + shift;
        }
      }
    }
  }
}

}  // namespace lockstep::data
