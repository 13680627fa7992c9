// Dataset: N samples held in memory, each a feature tensor of one shape (e.g. 1x28x28)
// plus one or more int targets (a class label, or next-token targets for a text model).
// Images stay u8 (4x smaller than f32) and become floats only when a batch is assembled.
//
//   Dataset d = load_mnist(dir, Split::train);
//   d.copy_features(i, out);   // out.size() == d.sample_numel(); images scaled to [0, 1]
//   int32_t y = d.label(i);
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lockstep::data {

// How stored features turn into floats.
enum class FeatureKind : uint8_t {
  image_u8,  // pixel bytes, scaled to [0, 1]
  token_u8,  // token ids (< 256), copied as their value
  float32,   // already floats
};

enum class Split : uint8_t { train, test };
// "train" or "test" (also "t10k", "eval"); InvalidArgument otherwise.
Split parse_split(const std::string& name);
const char* split_name(Split s);

class Dataset {
 public:
  Dataset() = default;
  // Features: size() * product(shape) values; targets: size() * targets_per_sample values,
  // each in [0, num_classes). Throws InvalidArgument on inconsistent sizes.
  static Dataset from_u8(std::string name, FeatureKind kind, std::vector<int64_t> shape,
                         std::vector<uint8_t> features, std::vector<int32_t> targets,
                         int64_t targets_per_sample, int num_classes);
  static Dataset from_f32(std::string name, std::vector<int64_t> shape, std::vector<float> features,
                          std::vector<int32_t> targets, int64_t targets_per_sample,
                          int num_classes);

  const std::string& name() const { return name_; }
  int64_t size() const { return size_; }
  FeatureKind kind() const { return kind_; }
  const std::vector<int64_t>& sample_shape() const { return shape_; }
  int64_t sample_numel() const { return numel_; }
  int64_t targets_per_sample() const { return targets_per_sample_; }
  int num_classes() const { return num_classes_; }
  // Channels/height/width of a 3-d sample shape (C, H, W); 0 when the shape is not 3-d.
  int64_t channels() const { return shape_.size() == 3 ? shape_[0] : 0; }
  int64_t height() const { return shape_.size() == 3 ? shape_[1] : 0; }
  int64_t width() const { return shape_.size() == 3 ? shape_[2] : 0; }

  std::span<const uint8_t> u8_features(int64_t i) const;  // kind() != float32
  std::span<const float> f32_features(int64_t i) const;   // kind() == float32
  std::span<const int32_t> targets(int64_t i) const;
  int32_t label(int64_t i) const { return targets(i)[0]; }
  // Writes sample i as floats (sample_numel() values): images in [0, 1], token ids as is.
  void copy_features(int64_t i, std::span<float> out) const;

  // Appends another dataset of the same kind, shape and classes (CIFAR batch files).
  void append(const Dataset& other);

 private:
  void validate() const;

  std::string name_;
  FeatureKind kind_ = FeatureKind::float32;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  int64_t size_ = 0;
  int64_t targets_per_sample_ = 1;
  int num_classes_ = 0;
  std::vector<uint8_t> u8_;
  std::vector<float> f32_;
  std::vector<int32_t> targets_;
};

}  // namespace lockstep::data
