#include "lockstep/data/dataset.h"

#include <algorithm>

#include "lockstep/core/error.h"

namespace lockstep::data {

Split parse_split(const std::string& name) {
  if (name == "train") {
    return Split::train;
  }
  if (name == "test" || name == "t10k" || name == "eval") {
    return Split::test;
  }
  LOCKSTEP_THROW(InvalidArgument, "unknown data split '", name, "' (use 'train' or 'test')");
}

const char* split_name(Split s) {
  return s == Split::train ? "train" : "test";
}

static int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d <= 0) {
      LOCKSTEP_THROW(InvalidArgument, "Dataset: sample dimensions must be > 0, got ", d);
    }
    n *= d;
  }
  return n;
}

Dataset Dataset::from_u8(std::string name, FeatureKind kind, std::vector<int64_t> shape,
                         std::vector<uint8_t> features, std::vector<int32_t> targets,
                         int64_t targets_per_sample, int num_classes) {
  if (kind == FeatureKind::float32) {
    LOCKSTEP_THROW(InvalidArgument, "Dataset::from_u8 needs an u8 feature kind");
  }
  Dataset d;
  d.name_ = std::move(name);
  d.kind_ = kind;
  d.shape_ = std::move(shape);
  d.numel_ = shape_numel(d.shape_);
  d.size_ = static_cast<int64_t>(features.size()) / d.numel_;
  d.targets_per_sample_ = targets_per_sample;
  d.num_classes_ = num_classes;
  d.u8_ = std::move(features);
  d.targets_ = std::move(targets);
  d.validate();
  return d;
}

Dataset Dataset::from_f32(std::string name, std::vector<int64_t> shape, std::vector<float> features,
                          std::vector<int32_t> targets, int64_t targets_per_sample,
                          int num_classes) {
  Dataset d;
  d.name_ = std::move(name);
  d.kind_ = FeatureKind::float32;
  d.shape_ = std::move(shape);
  d.numel_ = shape_numel(d.shape_);
  d.size_ = static_cast<int64_t>(features.size()) / d.numel_;
  d.targets_per_sample_ = targets_per_sample;
  d.num_classes_ = num_classes;
  d.f32_ = std::move(features);
  d.targets_ = std::move(targets);
  d.validate();
  return d;
}

void Dataset::validate() const {
  const size_t feats = kind_ == FeatureKind::float32 ? f32_.size() : u8_.size();
  if (feats != static_cast<size_t>(size_ * numel_)) {
    LOCKSTEP_THROW(InvalidArgument, "Dataset '", name_, "': ", feats,
                   " feature values is not a multiple of the sample size ", numel_);
  }
  if (targets_per_sample_ < 1 || num_classes_ < 1) {
    LOCKSTEP_THROW(InvalidArgument, "Dataset '", name_,
                   "': targets_per_sample and num_classes must be >= 1");
  }
  if (targets_.size() != static_cast<size_t>(size_ * targets_per_sample_)) {
    LOCKSTEP_THROW(InvalidArgument, "Dataset '", name_, "': ", targets_.size(), " targets for ",
                   size_, " samples of ", targets_per_sample_, " targets each");
  }
  auto bad = std::find_if(targets_.begin(), targets_.end(),
                          [&](int32_t t) { return t < 0 || t >= num_classes_; });
  if (bad != targets_.end()) {
    LOCKSTEP_THROW(InvalidArgument, "Dataset '", name_, "': target ", *bad, " at position ",
                   bad - targets_.begin(), " outside [0, ", num_classes_, ")");
  }
}

std::span<const uint8_t> Dataset::u8_features(int64_t i) const {
  LOCKSTEP_CHECK(kind_ != FeatureKind::float32 && i >= 0 && i < size_, "sample ", i, " of ", size_);
  return {u8_.data() + i * numel_, static_cast<size_t>(numel_)};
}

std::span<const float> Dataset::f32_features(int64_t i) const {
  LOCKSTEP_CHECK(kind_ == FeatureKind::float32 && i >= 0 && i < size_, "sample ", i, " of ", size_);
  return {f32_.data() + i * numel_, static_cast<size_t>(numel_)};
}

std::span<const int32_t> Dataset::targets(int64_t i) const {
  LOCKSTEP_CHECK(i >= 0 && i < size_, "sample ", i, " of ", size_);
  return {targets_.data() + i * targets_per_sample_, static_cast<size_t>(targets_per_sample_)};
}

void Dataset::copy_features(int64_t i, std::span<float> out) const {
  LOCKSTEP_CHECK_EQ(out.size(), static_cast<size_t>(numel_), "copy_features output size");
  if (kind_ == FeatureKind::float32) {
    auto src = f32_features(i);
    std::copy(src.begin(), src.end(), out.begin());
    return;
  }
  auto src = u8_features(i);
  const float scale = kind_ == FeatureKind::image_u8 ? 1.0f / 255.0f : 1.0f;
  for (size_t k = 0; k < src.size(); ++k) {
    out[k] = static_cast<float>(src[k]) * scale;
  }
}

void Dataset::append(const Dataset& o) {
  if (o.kind_ != kind_ || o.shape_ != shape_ || o.targets_per_sample_ != targets_per_sample_ ||
      o.num_classes_ != num_classes_) {
    LOCKSTEP_THROW(DataError, "cannot append dataset '", o.name_, "' to '", name_,
                   "': different sample shape, kind or number of classes");
  }
  u8_.insert(u8_.end(), o.u8_.begin(), o.u8_.end());
  f32_.insert(f32_.end(), o.f32_.begin(), o.f32_.end());
  targets_.insert(targets_.end(), o.targets_.begin(), o.targets_.end());
  size_ += o.size_;
}

}  // namespace lockstep::data
