// Helpers shared by the train tests: a fresh temporary directory per test, learnable
// synthetic images, a snapshot of a directory's bytes, and a one-byte corruption.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "lockstep/data/dataset.h"

namespace lockstep::train::testing {

inline std::filesystem::path fresh_dir(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() /
             ("lockstep_train_" + tag + "_" + std::to_string(::getpid()) + "_" + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Learnable synthetic 28x28 images: the label is the quadrant holding the brightest pixel.
// `with_nan` makes one pixel of the first image NaN.
inline data::Dataset synthetic(int64_t n, uint64_t seed, bool with_nan = false) {
  std::vector<float> f(size_t(n) * 784);
  std::vector<int32_t> y(static_cast<size_t>(n));
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (int64_t i = 0; i < n; ++i) {
    int best = 0;
    for (int p = 0; p < 784; ++p) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      f[size_t(i * 784 + p)] = float(s >> 40) / float(1 << 24);
      if (f[size_t(i * 784 + p)] > f[size_t(i * 784 + best)]) best = p;
    }
    y[size_t(i)] = (best / 28 < 14 ? 0 : 2) + (best % 28 < 14 ? 0 : 1);
  }
  if (with_nan) f[5] = NAN;
  return data::Dataset::from_f32("synthetic", {1, 28, 28}, std::move(f), std::move(y), 1, 10);
}

// Every file below `dir` with its bytes (to show that nothing saved was touched).
inline std::map<std::string, std::string> fingerprint(const std::filesystem::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    out[std::filesystem::relative(e.path(), dir).string()] = {std::istreambuf_iterator<char>(f), {}};
  }
  return out;
}

// Flips the bits of the byte `from_end` bytes before the end of `file` (XOR with the byte
// read, so the file always changes).
inline void corrupt_byte(const std::filesystem::path& file, std::streamoff from_end) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-from_end, std::ios::end);
  const int c = f.get();
  ASSERT_NE(c, EOF) << file;
  f.seekp(-from_end, std::ios::end);
  f.put(char(c ^ 0xff));
  ASSERT_TRUE(f.good()) << file;
}

}  // namespace lockstep::train::testing
