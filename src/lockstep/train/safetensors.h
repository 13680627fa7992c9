// Safetensors, the weight format that Python's `safetensors` and `torch` open: an 8-byte
// little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
// "__metadata__": {str: str}}, then the tensors' raw little-endian bytes, back to back.
//
//   std::string header = safetensors_header(views, {{"model", "fmnist-cnn"}});
//   SafetensorsData d = decode_safetensors(bytes, "ckpt/model.safetensors");
//
// The decoder treats its input as hostile: the header length is capped, every offset and size
// is checked against the file before use, dtypes and shapes are validated, and any problem is
// a DataError that names the file and what is wrong.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/core/dtype.h"

namespace lockstep::train {

using Metadata = std::map<std::string, std::string>;

// Headers larger than this are rejected before anything is allocated (safetensors: 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeader = uint64_t(100) << 20;

// A tensor to write, viewing memory the caller keeps alive.
struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;
};

template <class T>
TensorView tensor_view(std::string name, std::span<const T> values, std::vector<int64_t> shape) {
  return {std::move(name), dtype_of_v<T>, std::move(shape),
          {reinterpret_cast<const uint8_t*>(values.data()), values.size_bytes()}};
}

// A tensor read from a file (owns its bytes).
struct StoredTensor {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const;
  // The values converted to float (any dtype; integers and f64 rounded to nearest).
  std::vector<float> to_floats() const;
  TensorView view() const { return {name, dtype, shape, bytes}; }
};

struct SafetensorsData {
  std::vector<StoredTensor> tensors;  // in file order
  Metadata metadata;
  const StoredTensor* find(std::string_view name) const;  // nullptr when absent
};

// "F32", "BF16", ... as the format spells them; nullopt for a name it does not know.
std::string_view safetensors_dtype_name(DType t);
std::optional<DType> parse_safetensors_dtype(std::string_view name);

// The 8-byte length plus the JSON header (padded with spaces to 8-byte alignment) for these
// tensors, laid out in the given order. InvalidArgument for an empty or duplicate name, a
// negative dimension or a byte count that does not match the shape.
std::string safetensors_header(std::span<const TensorView> tensors, const Metadata& metadata);
// The whole file in memory (header + data).
std::vector<uint8_t> encode_safetensors(std::span<const TensorView> tensors,
                                        const Metadata& metadata);
// False when JSON text nests objects/arrays deeper than max_depth (checked before parsing
// hostile input, so that no parser can be driven into deep recursion).
bool json_nesting_within(std::string_view text, int max_depth);

// Parses a whole file; `origin` (a path) prefixes every error message.
SafetensorsData decode_safetensors(std::span<const uint8_t> bytes, const std::string& origin);

}  // namespace lockstep::train
