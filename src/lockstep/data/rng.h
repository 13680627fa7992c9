// Platform-independent random numbers for the data layer: the same seed gives the same
// permutation and the same augmentation with every compiler and standard library
// (std::shuffle and std::uniform_int_distribution are implementation-defined).
//
//   Rng rng(mix_seed(seed, epoch));
//   fisher_yates(std::span(indices), rng);
#pragma once

#include <cstdint>
#include <span>
#include <utility>

namespace lockstep::data {

// The SplitMix64 finaliser: a bijective 64-bit mix, good enough to derive independent streams.
constexpr uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// One seed from several values (e.g. seed, epoch, sample index); order matters.
constexpr uint64_t mix_seed(uint64_t a, uint64_t b) {
  return mix64(mix64(a) ^ b);
}
constexpr uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
  return mix_seed(mix_seed(a, b), c);
}

// SplitMix64 generator (Steele et al. 2014): tiny state, passes BigCrush.
class Rng {
 public:
  explicit constexpr Rng(uint64_t seed) : state_(seed) {}
  constexpr uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), bound > 0, without modulo bias: values below 2^64 mod bound
  // are rejected so that every residue has the same number of preimages.
  constexpr uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) {
        return r % bound;
      }
    }
  }

 private:
  uint64_t state_;
};

// In-place Fisher-Yates shuffle (Durstenfeld's variant), deterministic given the Rng.
template <class T>
void fisher_yates(std::span<T> v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng.below(i));
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace lockstep::data
