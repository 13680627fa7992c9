// IDX files (the MNIST / Fashion-MNIST format), raw or gzipped. An IDX file is a 4-byte
// magic 0x0000TTNN (TT: element type, NN: number of dimensions), NN big-endian u32 sizes,
// then the elements in row-major order, big-endian.
//
//   Dataset train = load_mnist(find_fashion_mnist_dir(), Split::train);
//   Dataset d = load_idx_dataset("imgs-idx3-ubyte.gz", "labels-idx1-ubyte.gz");
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lockstep/data/dataset.h"

namespace lockstep::data {

enum class IdxType : uint8_t {
  u8 = 0x08,
  i8 = 0x09,
  i16 = 0x0B,
  i32 = 0x0C,
  f32 = 0x0D,
  f64 = 0x0E
};
size_t idx_type_size(IdxType t);

struct IdxArray {
  IdxType type = IdxType::u8;
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;  // elements in host byte order
  uint64_t count() const;     // product of dims
};

inline constexpr size_t kIdxMaxDims = 8;

// What an IDX header says: the element type, the sizes, and the payload size they declare
// (saturated at UINT64_MAX).
struct IdxHeader {
  IdxType type = IdxType::u8;
  std::vector<uint32_t> dims;
  size_t header_bytes = 0;
  uint64_t payload_bytes = 0;
};
// Parses the header at the start of `bytes`; DataError on a bad magic or a short header.
IdxHeader parse_idx_header(std::span<const uint8_t> bytes, const std::string& name);

// Parses an in-memory (already gunzipped) IDX file; `name` appears in errors. Checks the
// magic, the number of dimensions, and that the sizes match the length exactly.
IdxArray parse_idx(std::span<const uint8_t> bytes, const std::string& name);
// Reads (and gunzips) an IDX file, inflating no further than its header's declared size
// (plus one byte to detect trailing data).
IdxArray load_idx(const std::string& path);

// Builds an image dataset from in-memory u8 IDX images (N x H x W, or N x C x H x W) and
// labels (N), each label in [0, num_classes).
Dataset idx_to_dataset(IdxArray images, const std::string& images_name, const IdxArray& labels,
                       const std::string& labels_name, int num_classes);
Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                         int num_classes = 10);

// MNIST-style directory: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (also the
// '.idx3-ubyte' spelling). DataError listing what was looked for when files are missing.
Dataset load_mnist(const std::string& dir, Split split, int num_classes = 10);

// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr const char* kDebianFashionMnistDir = "/usr/share/datasets/fashion-mnist";
// The first of `dirs` (then the Debian directory) that holds Fashion-MNIST's train files.
std::optional<std::string> find_fashion_mnist_dir(const std::vector<std::string>& dirs = {});

}  // namespace lockstep::data
