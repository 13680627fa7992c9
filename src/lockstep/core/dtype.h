// Element types shared by every layer: f32 f64 f16 bf16 i32 i64 u8, their sizes and names,
// and exact conversions between f32 and the 16-bit floats (round to nearest even; NaN and
// Inf preserved). f16 and bf16 are stored as raw bits; arithmetic happens in f32.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lockstep {

enum class DType : uint8_t { f32 = 0, f64 = 1, f16 = 2, bf16 = 3, i32 = 4, i64 = 5, u8 = 6 };
inline constexpr DType kAllDTypes[] = {DType::f32, DType::f64, DType::f16, DType::bf16,
                                       DType::i32, DType::i64, DType::u8};

// Half precision (IEEE 754 binary16) and bfloat16, held as bits.
struct f16 {
  uint16_t bits = 0;
};
struct bf16 {
  uint16_t bits = 0;
};

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
  }
  return "?";
}

constexpr bool dtype_is_float(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16;
}

// Accepts "float32"/"f32"/"float", "float16"/"f16"/"half", "bfloat16"/"bf16", "int32"/"i32", ...
std::optional<DType> parse_dtype(std::string_view name);

// The C++ type that holds one element of a dtype.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };
template <class T> inline constexpr DType dtype_of_v = dtype_of<T>::value;

// --- conversions (inline: they sit in reduction inner loops) ---

inline float bf16_to_float(bf16 h) { return std::bit_cast<float>(uint32_t(h.bits) << 16); }

inline bf16 float_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x0040u)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{uint16_t(u >> 16)};
}

inline float f16_to_float(f16 h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  const uint32_t man = h.bits & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));  // Inf/NaN
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
  if (man == 0) return std::bit_cast<float>(sign);  // signed zero
  // Subnormal: value = man * 2^-24.
  float v = float(man) * 0x1p-24f;
  return sign ? -v : v;
}

inline f16 float_to_f16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu))};  // NaN
  if (a >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};  // overflow (after rounding) -> Inf
  if (a < 0x38800000u) {
    // Result is subnormal or zero: value / 2^-24, rounded to nearest even.
    float v = std::bit_cast<float>(a) * 0x1p24f;  // exact scaling
    // v < 1024; nearbyint-style rounding to even via the magic-number trick.
    float r = (v + 0x1p23f) - 0x1p23f;
    return f16{uint16_t(sign | uint16_t(r))};
  }
  // Normal: rebias exponent, round mantissa from 23 to 10 bits to nearest even.
  uint32_t v = a - 0x38000000u;  // exponent 127 -> 15
  v += 0xfffu + ((v >> 13) & 1u);
  return f16{uint16_t(sign | (v >> 13))};
}

// Reads element i of a typed buffer as double / writes a double into it (slow path: tests, IO).
double load_as_double(const void* data, DType t, size_t i);
void store_from_double(void* data, DType t, size_t i, double v);

}  // namespace lockstep
