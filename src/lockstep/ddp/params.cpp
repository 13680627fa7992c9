#include "lockstep/ddp/params.h"

#include <algorithm>

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

void ParamSource::zero_grads() {
  for (size_t i = 0; i < num_params(); ++i) {
    auto g = grad_bytes(i);  // all-zero bits are +0 in every float dtype
    std::fill(g.begin(), g.end(), std::byte{0});
  }
}

}  // namespace lockstep::ddp
