// A minimal reader of the gzipped Fashion-MNIST IDX files, local to the nn tests and
// benchmark (the real data layer lives in src/lockstep/data, which nn may not use).
// Images come back as floats in [0, 1], [count, 1, 28, 28]; labels as int32.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lockstep/core/error.h"

namespace lockstep::nn::testing {

struct FashionMnist {
  std::vector<float> images;  // count * 784
  std::vector<int32_t> labels;
  int64_t count = 0;
};

inline const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

inline std::vector<uint8_t> read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr)
    LOCKSTEP_THROW(DataError, "cannot open ", path, "; install Debian's dataset-fashion-mnist or pass --data DIR");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  const bool bad = n < 0;
  gzclose(f);
  if (bad) LOCKSTEP_THROW(DataError, path, ": corrupt gzip stream");
  return out;
}

inline uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 | uint32_t(b[at + 2]) << 8 | b[at + 3];
}

// split: "train" or "t10k"; limit: read at most this many samples (0 = all).
inline FashionMnist load_fashion_mnist(const std::string& dir, const std::string& split, int64_t limit = 0) {
  const std::string ip = dir + "/" + split + "-images-idx3-ubyte.gz", lp = dir + "/" + split + "-labels-idx1-ubyte.gz";
  const auto img = read_gz(ip), lab = read_gz(lp);
  if (img.size() < 16 || be32(img, 0) != 0x803 || be32(img, 8) != 28 || be32(img, 12) != 28)
    LOCKSTEP_THROW(DataError, ip, ": not an IDX3 file of 28x28 images");
  if (lab.size() < 8 || be32(lab, 0) != 0x801) LOCKSTEP_THROW(DataError, lp, ": not an IDX1 label file");
  int64_t n = be32(img, 4);
  if (be32(lab, 4) != uint32_t(n) || img.size() < 16 + size_t(n) * 784 || lab.size() < 8 + size_t(n))
    LOCKSTEP_THROW(DataError, ip, " and ", lp, ": counts or sizes disagree");
  if (limit > 0 && limit < n) n = limit;
  FashionMnist d;
  d.count = n;
  d.images.resize(size_t(n) * 784);
  d.labels.resize(size_t(n));
  for (size_t i = 0; i < d.images.size(); ++i) d.images[i] = float(img[16 + i]) / 255.0f;
  for (int64_t i = 0; i < n; ++i) d.labels[size_t(i)] = lab[8 + size_t(i)];
  return d;
}

}  // namespace lockstep::nn::testing
