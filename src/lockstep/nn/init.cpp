#include "lockstep/nn/init.h"

#include <algorithm>
#include <cmath>

#include "lockstep/core/error.h"

namespace lockstep::nn {
namespace {
int64_t positive(int64_t fan, const char* what) {
  if (fan <= 0) LOCKSTEP_THROW(InvalidArgument, "Init::", what, ": fan must be positive, got ", fan);
  return fan;
}
}  // namespace

// std::sqrt is correctly rounded (IEEE 754), so these bounds are identical everywhere.
Init Init::torch_default(int64_t fan_in) {
  const float b = float(1.0 / std::sqrt(double(positive(fan_in, "torch_default"))));
  return uniform(-b, b);
}
Init Init::kaiming_uniform(int64_t fan_in) {
  const float b = float(std::sqrt(6.0 / double(positive(fan_in, "kaiming_uniform"))));
  return uniform(-b, b);
}
Init Init::kaiming_normal(int64_t fan_in) {
  return normal(0.0f, float(std::sqrt(2.0 / double(positive(fan_in, "kaiming_normal")))));
}
Init Init::xavier_uniform(int64_t fan_in, int64_t fan_out) {
  const double fan = double(positive(fan_in + fan_out, "xavier_uniform"));
  const float b = float(std::sqrt(6.0 / fan));
  return uniform(-b, b);
}
Init Init::xavier_normal(int64_t fan_in, int64_t fan_out) {
  return normal(0.0f, float(std::sqrt(2.0 / double(positive(fan_in + fan_out, "xavier_normal")))));
}

void apply_init(const Init& init, std::span<float> values, Rng& rng) {
  switch (init.kind) {
    case Init::Kind::constant: std::fill(values.begin(), values.end(), init.a); return;
    case Init::Kind::uniform:
      for (float& v : values) v = rng.uniform(init.a, init.b);
      return;
    case Init::Kind::normal:
      for (float& v : values) v = rng.normal(init.a, init.b);
      return;
  }
}

}  // namespace lockstep::nn
