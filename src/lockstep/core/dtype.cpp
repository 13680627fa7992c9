#include "lockstep/core/dtype.h"

#include <cmath>
#include <cstring>

namespace lockstep {

std::optional<DType> parse_dtype(std::string_view n) {
  if (n == "float32" || n == "f32" || n == "float") return DType::f32;
  if (n == "float64" || n == "f64" || n == "double") return DType::f64;
  if (n == "float16" || n == "f16" || n == "half") return DType::f16;
  if (n == "bfloat16" || n == "bf16") return DType::bf16;
  if (n == "int32" || n == "i32" || n == "int") return DType::i32;
  if (n == "int64" || n == "i64" || n == "long") return DType::i64;
  if (n == "uint8" || n == "u8" || n == "byte") return DType::u8;
  return std::nullopt;
}

double load_as_double(const void* data, DType t, size_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(data)[i];
    case DType::f64: return static_cast<const double*>(data)[i];
    case DType::f16: return f16_to_float(static_cast<const f16*>(data)[i]);
    case DType::bf16: return bf16_to_float(static_cast<const bf16*>(data)[i]);
    case DType::i32: return static_cast<const int32_t*>(data)[i];
    case DType::i64: return double(static_cast<const int64_t*>(data)[i]);
    case DType::u8: return static_cast<const uint8_t*>(data)[i];
  }
  return 0;
}

void store_from_double(void* data, DType t, size_t i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(data)[i] = float(v); return;
    case DType::f64: static_cast<double*>(data)[i] = v; return;
    case DType::f16: static_cast<f16*>(data)[i] = float_to_f16(float(v)); return;
    case DType::bf16: static_cast<bf16*>(data)[i] = float_to_bf16(float(v)); return;
    case DType::i32: static_cast<int32_t*>(data)[i] = int32_t(std::llround(v)); return;
    case DType::i64: static_cast<int64_t*>(data)[i] = int64_t(std::llround(v)); return;
    case DType::u8: static_cast<uint8_t*>(data)[i] = uint8_t(std::llround(v)); return;
  }
}

}  // namespace lockstep
