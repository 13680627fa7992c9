#include "lockstep/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace lockstep {
namespace {

// Independent reference: convert by exhaustive search over all 16-bit patterns is too slow per
// call, so the reference rounds through double with explicit nearest-even logic.
uint16_t ref_float_to_f16(float f) {
  if (std::isnan(f)) return 0x7e00;
  uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  double a = std::fabs(double(f));
  if (a == 0) return sign;
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int exp = e - 1;    // a = 1.x * 2^exp
  if (exp < -14) exp = -14;  // subnormal range uses the minimum exponent
  double ulp = std::ldexp(1.0, exp - 10);
  double q = a / ulp;
  double r = std::nearbyint(q);  // default rounding mode: nearest even
  double v = r * ulp;
  if (v >= 65520.0 || v > 65504.0) return sign | 0x7c00;
  // Re-encode v exactly.
  if (v < std::ldexp(1.0, -14)) return sign | uint16_t(v / std::ldexp(1.0, -24));
  std::frexp(v, &e);
  int ve = e - 1;
  uint16_t man = uint16_t(v / std::ldexp(1.0, ve - 10) - 1024);
  return sign | uint16_t((ve + 15) << 10) | man;
}

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_EQ(dtype_size(DType::u8), 1u);
  for (DType t : kAllDTypes) {
    auto parsed = parse_dtype(dtype_name(t));
    ASSERT_TRUE(parsed.has_value()) << dtype_name(t);
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_FALSE(parse_dtype("float8").has_value());
}

TEST(DType, F16RoundTripsEveryPattern) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    f16 h{uint16_t(b)};
    float f = f16_to_float(h);
    bool is_nan = ((b >> 10) & 0x1f) == 0x1f && (b & 0x3ff) != 0;
    if (is_nan) {
      EXPECT_TRUE(std::isnan(f)) << b;
      EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(f))));
    } else {
      ASSERT_EQ(float_to_f16(f).bits, b) << "pattern " << b << " value " << f;
    }
  }
}

TEST(DType, F16RoundsToNearestEven) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    float f = std::bit_cast<float>(bits(rng));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_f16(f).bits, ref_float_to_f16(f)) << f;
  }
  // Ties: 1 + 2^-11 is halfway between 1 and 1+2^-10 -> even (1).
  EXPECT_EQ(float_to_f16(1.0f + 0x1p-11f).bits, 0x3c00);
  EXPECT_EQ(float_to_f16(1.0f + 3 * 0x1p-11f).bits, 0x3c02);
  EXPECT_EQ(float_to_f16(65504.0f).bits, 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f).bits, 0x7c00);  // rounds to Inf
  EXPECT_EQ(float_to_f16(std::numeric_limits<float>::infinity()).bits, 0x7c00);
  EXPECT_EQ(float_to_f16(-std::numeric_limits<float>::infinity()).bits, 0xfc00);
  EXPECT_EQ(float_to_f16(0x1p-24f).bits, 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_f16(0x1p-25f).bits, 0x0000);  // tie to even (zero)
  EXPECT_EQ(float_to_f16(-0.0f).bits, 0x8000);
}

TEST(DType, BF16RoundsToNearestEvenAndKeepsSpecials) {
  EXPECT_EQ(float_to_bf16(1.0f).bits, 0x3f80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> even (1).
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f).bits, 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3 * 0x1p-8f).bits, 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(INFINITY))));
  // A NaN whose payload sits only in the low bits must stay NaN, not become Inf.
  float low_nan = std::bit_cast<float>(0x7f800001u);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(low_nan))));
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 100000; ++i) {
    float f = std::bit_cast<float>(bits(rng));
    if (std::isnan(f) || std::isinf(f)) continue;
    float back = bf16_to_float(float_to_bf16(f));
    double err = std::fabs(double(back) - double(f));
    double ulp = std::ldexp(1.0, std::max(std::ilogb(f), -126) - 7);  // fixed ulp for subnormals
    if (!std::isinf(back)) {
      ASSERT_LE(err, ulp / 2) << f;
    }
  }
}

TEST(DType, LoadStoreAsDouble) {
  for (DType t : kAllDTypes) {
    std::vector<std::byte> buf(dtype_size(t) * 3);
    store_from_double(buf.data(), t, 1, 42.0);
    EXPECT_EQ(load_as_double(buf.data(), t, 1), 42.0) << dtype_name(t);
  }
}

}  // namespace
}  // namespace lockstep
