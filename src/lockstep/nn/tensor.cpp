#include "lockstep/nn/tensor.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "lockstep/core/error.h"

namespace lockstep::nn {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const int64_t> dims) {
  if (dims.size() > size_t(kMaxRank))
    LOCKSTEP_THROW(InvalidArgument, "Shape: rank ", dims.size(), " exceeds the maximum ", kMaxRank);
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) LOCKSTEP_THROW(InvalidArgument, "Shape: dimension ", i, " is negative (", dims[i], ")");
    dims_[i] = dims[i];
  }
  rank_ = int(dims.size());
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[size_t(i)];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[size_t(i)] != o.dims_[size_t(i)]) return false;
  return true;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < rank_; ++i) os << (i ? ", " : "") << dims_[size_t(i)];
  os << ']';
  return os.str();
}

Tensor::Tensor(const Shape& shape) {
  resize(shape);
  zero();
}

Tensor Tensor::wrap(std::span<float> data, const Shape& shape) {
  if (int64_t(data.size()) != shape.numel())
    LOCKSTEP_THROW(InvalidArgument, "Tensor::wrap: ", data.size(), " floats cannot hold shape ", shape.str());
  Tensor t;
  t.data_ = data.data();
  t.shape_ = shape;
  t.capacity_ = data.size();
  return t;
}

void Tensor::resize(const Shape& shape) {
  const size_t need = size_t(shape.numel());
  if (need > capacity_) {
    if (data_ != nullptr && !storage_)
      LOCKSTEP_THROW(InvalidArgument, "Tensor::resize: a view of ", capacity_,
                     " floats cannot grow to ", shape.str(), "; resize an owning tensor instead");
    // Storage only grows: after the largest batch has been seen, resizing is free.
    auto buf = std::make_shared<AlignedBuffer>(std::max<size_t>(need, 1) * sizeof(float));
    storage_ = std::move(buf);
    data_ = storage_->as<float>().data();
    capacity_ = need;
  }
  shape_ = shape;
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (shape.numel() != numel())
    LOCKSTEP_THROW(InvalidArgument, "Tensor::reshape: cannot view ", shape_.str(), " as ", shape.str(),
                   " (element counts differ)");
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  if (rank() == 0 || begin < 0 || end < begin || end > shape_[0])
    LOCKSTEP_THROW(InvalidArgument, "Tensor::slice: rows [", begin, ", ", end, ") out of range for ", shape_.str());
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  Tensor t = *this;
  t.data_ = data_ + begin * row;
  t.shape_[0] = end - begin;
  t.capacity_ = size_t((end - begin) * row);
  return t;
}

void Tensor::fill(float v) { std::fill_n(data_, numel(), v); }

void Tensor::copy_from(const Tensor& src) {
  if (src.numel() != numel())
    LOCKSTEP_THROW(InvalidArgument, "Tensor::copy_from: ", src.shape().str(), " into ", shape_.str());
  if (numel() > 0) std::memcpy(data_, src.data_, size_t(numel()) * sizeof(float));
}

std::vector<std::byte> Tensor::to_bytes(DType dtype) const {
  std::vector<std::byte> out(size_t(numel()) * dtype_size(dtype));
  if (dtype == DType::f32) {
    if (!out.empty()) std::memcpy(out.data(), data_, out.size());
    return out;
  }
  for (int64_t i = 0; i < numel(); ++i) store_from_double(out.data(), dtype, size_t(i), double(data_[i]));
  return out;
}

void Tensor::from_bytes(std::span<const std::byte> bytes, DType dtype) {
  if (bytes.size() != size_t(numel()) * dtype_size(dtype))
    LOCKSTEP_THROW(InvalidArgument, "Tensor::from_bytes: ", bytes.size(), " bytes of ", dtype_name(dtype),
                   " do not match shape ", shape_.str());
  for (int64_t i = 0; i < numel(); ++i) data_[i] = float(load_as_double(bytes.data(), dtype, size_t(i)));
}

}  // namespace lockstep::nn
