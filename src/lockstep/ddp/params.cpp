#include "lockstep/ddp/params.h"

#include <algorithm>
#include <bit>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/core/error.h"

namespace lockstep::ddp {

size_t TensorInfo::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

std::string TensorInfo::describe() const {
  std::string s = name + " [";
  for (size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + "] " + std::string(dtype_name(dtype));
}

const TensorInfo& ParamSource::buffer_info(size_t i) const {
  LOCKSTEP_THROW(InvalidArgument, "ParamSource: buffer ", i, " requested but the source has none");
}

std::span<float> ParamSource::buffer(size_t i) {
  LOCKSTEP_THROW(InvalidArgument, "ParamSource: buffer ", i, " requested but the source has none");
}

namespace {
// Index of the first NaN/Inf in `x`, or x.size(). The common all-finite case is one
// branch-free pass the compiler vectorises.
size_t first_nonfinite(std::span<const float> x) {
  uint32_t any = 0;
  for (float v : x) any |= uint32_t((std::bit_cast<uint32_t>(v) & 0x7f800000u) == 0x7f800000u);
  if (!any) return x.size();
  for (size_t i = 0; i < x.size(); ++i)
    if ((std::bit_cast<uint32_t>(x[i]) & 0x7f800000u) == 0x7f800000u) return i;
  return x.size();
}
}  // namespace

bool ParamSource::nonfinite(std::span<const std::byte> x, DType t) const {
  if (t != DType::f32) return comm::has_nonfinite(x.data(), x.size() / dtype_size(t), t);
  const auto* f = reinterpret_cast<const float*>(x.data());
  const size_t n = x.size() / sizeof(float);
  return first_nonfinite({f, n}) != n;
}

void ParamSource::zero_grads() {
  for (size_t i = 0; i < num_params(); ++i) {
    auto g = grad_bytes(i);  // all-zero bits are +0 in every float dtype
    std::fill(g.begin(), g.end(), std::byte{0});
  }
}

}  // namespace lockstep::ddp
