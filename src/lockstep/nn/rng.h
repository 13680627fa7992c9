// Rng: a small seeded random generator whose streams are identical on every platform and
// compiler (PCG32 for bits; uniform and normal samplers built only from IEEE-exact
// operations, never std::*_distribution, whose outputs differ between standard libraries).
//
//   Rng rng(seed, /*stream=*/3);
//   float u = rng.uniform(-b, b);
//   float z = rng.normal(0.0f, 0.02f);
#pragma once

#include <cstdint>

namespace lockstep::nn {

class Rng {
 public:
  explicit Rng(uint64_t seed, uint64_t stream = 0);

  uint32_t next_u32();
  // Uniform in [0, 1) with 24 random bits (every value exactly representable as float).
  float uniform01();
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform01(); }
  // Standard normal by Marsaglia's polar method, evaluated in double with our own log.
  double normal();
  float normal(float mean, float std) { return mean + std * float(normal()); }

 private:
  uint64_t state_ = 0;
  uint64_t inc_ = 0;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// A stateless hash of (seed, counter) to 32 random bits: Dropout uses it so that the mask
// of element i at step s is a pure function of (seed, s, i), whatever ran before.
uint32_t hash_u32(uint64_t seed, uint64_t counter);

// Natural log in double using only + - * / (so it is bit-identical everywhere); x > 0.
double portable_log(double x);

}  // namespace lockstep::nn
