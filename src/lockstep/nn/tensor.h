// Tensor: a float32 n-d array (rank <= 6) over contiguous storage, with cheap views.
// Layers keep their activations in Tensors that they `resize` each step: the storage only
// grows, so a training loop at a fixed batch size allocates nothing after its first step.
//
//   Tensor x({64, 1, 28, 28});          // owned, zero-filled
//   Tensor flat = x.reshape({64, 784}); // a view sharing x's storage
//   Tensor w = Tensor::wrap(span, {out, in});  // non-owning view of someone else's floats
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lockstep/core/buffer.h"
#include "lockstep/core/dtype.h"

namespace lockstep::nn {

// A fixed-capacity shape: no heap allocation, so resizing activations every step is free.
class Shape {
 public:
  static constexpr int kMaxRank = 6;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[size_t(i)]; }
  int64_t& operator[](int i) { return dims_[size_t(i)]; }
  int64_t numel() const;
  std::span<const int64_t> dims() const { return {dims_.data(), size_t(rank_)}; }
  bool operator==(const Shape& o) const;
  std::string str() const;  // "[64, 1, 28, 28]"

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(const Shape& shape);  // owned storage, zero-filled

  // A view of floats owned elsewhere (a parameter inside the model's flat buffer).
  static Tensor wrap(std::span<float> data, const Shape& shape);

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + shape_.rank() : i]; }
  int64_t numel() const { return shape_.numel(); }
  float* data() { return data_; }
  const float* data() const { return data_; }
  std::span<float> span() { return {data_, size_t(numel())}; }
  std::span<const float> span() const { return {data_, size_t(numel())}; }
  float& operator[](int64_t i) { return data_[i]; }
  float operator[](int64_t i) const { return data_[i]; }

  // Changes the shape of an owned tensor, growing its storage only when needed. Contents
  // are unspecified afterwards. Throws InvalidArgument on a non-owning view that would grow.
  void resize(const Shape& shape);
  // A view with another shape and the same number of elements (shares storage).
  Tensor reshape(const Shape& shape) const;
  // A view of rows [begin, end) along the first dimension.
  Tensor slice(int64_t begin, int64_t end) const;

  void fill(float v);
  void zero() { fill(0.0f); }
  void copy_from(const Tensor& src);  // same numel required

  // Storage/IO in the core dtypes: converts to/from f32 (f16/bf16 round to nearest even).
  std::vector<std::byte> to_bytes(DType dtype) const;
  void from_bytes(std::span<const std::byte> bytes, DType dtype);

 private:
  std::shared_ptr<AlignedBuffer> storage_;  // null for non-owning views made by wrap()
  float* data_ = nullptr;
  Shape shape_;
  size_t capacity_ = 0;  // floats available at data_
};

}  // namespace lockstep::nn
