#include "lockstep/nn/rng.h"

#include <cmath>

namespace lockstep::nn {

Rng::Rng(uint64_t seed, uint64_t stream) {
  // PCG32 initialisation as in the reference implementation (pcg32_srandom_r).
  inc_ = (stream << 1u) | 1u;
  state_ = 0;
  next_u32();
  state_ += seed;
  next_u32();
}

uint32_t Rng::next_u32() {
  const uint64_t old = state_;
  state_ = old * 6364136223846793005ULL + inc_;
  const uint32_t xorshifted = uint32_t(((old >> 18u) ^ old) >> 27u);
  const uint32_t rot = uint32_t(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

float Rng::uniform01() { return float(next_u32() >> 8) * 0x1p-24f; }

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u, v, s;
  do {
    // 53-bit uniforms in (-1, 1) from two draws each.
    const uint64_t a = (uint64_t(next_u32()) << 21) ^ next_u32();
    const uint64_t b = (uint64_t(next_u32()) << 21) ^ next_u32();
    u = double(a & ((1ULL << 53) - 1)) * 0x1p-52 - 1.0;
    v = double(b & ((1ULL << 53) - 1)) * 0x1p-52 - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  // sqrt is correctly rounded by IEEE 754, so this is portable; log is our own.
  const double f = std::sqrt(-2.0 * portable_log(s) / s);
  spare_ = v * f;
  has_spare_ = true;
  return u * f;
}

uint32_t hash_u32(uint64_t seed, uint64_t counter) {
  // SplitMix64 finaliser over a seed/counter mix: cheap and well distributed.
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + counter + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return uint32_t(z >> 32);
}

double portable_log(double x) {
  // x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(t), t = (m-1)/(m+1), |t| < 0.172.
  int e = 0;
  double m = std::frexp(x, &e);  // exact: m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  const double t = (m - 1.0) / (m + 1.0);
  const double t2 = t * t;
  double sum = 0.0;
  for (int k = 27; k >= 1; k -= 2) sum = sum * t2 + 1.0 / double(k);  // Horner, t^26 < 1e-19
  return 2.0 * t * sum + double(e) * 0.69314718055994530942;
}

}  // namespace lockstep::nn
