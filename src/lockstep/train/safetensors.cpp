#include "lockstep/train/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "lockstep/core/error.h"

namespace lockstep::train {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swapping");

using nlohmann::json;

namespace {

struct DTypeName {
  DType dtype;
  std::string_view name;
};
constexpr DTypeName kNames[] = {{DType::f32, "F32"}, {DType::f64, "F64"},   {DType::f16, "F16"},
                                {DType::bf16, "BF16"}, {DType::i32, "I32"}, {DType::i64, "I64"},
                                {DType::u8, "U8"}};

// Elements in a shape, or -1 when a dimension is negative or the product overflows int64.
int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// JSON nesting deeper than a safetensors header ever needs is refused before parsing, so a
// hostile "[[[[..." cannot exhaust the stack anywhere.
}  // namespace

bool json_nesting_within(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

namespace {

struct Entry {
  StoredTensor tensor;
  uint64_t begin = 0, end = 0;
};

uint64_t offset_value(const json& v, const std::string& where) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    LOCKSTEP_THROW(DataError, where, ": data_offsets must be non-negative integers");
  return v.get<uint64_t>();
}

Entry parse_entry(const std::string& name, const json& info, uint64_t data_size,
                  const std::string& origin) {
  const std::string where = str_cat(origin, ": tensor '", name, "'");
  if (!info.is_object()) LOCKSTEP_THROW(DataError, where, ": entry is not a JSON object");
  for (const auto& [key, _] : info.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      LOCKSTEP_THROW(DataError, where, ": unknown field '", key, "'");
  }
  if (!info.contains("dtype") || !info["dtype"].is_string())
    LOCKSTEP_THROW(DataError, where, ": missing or non-string 'dtype'");
  const std::string dname = info["dtype"].get<std::string>();
  auto dtype = parse_safetensors_dtype(dname);
  if (!dtype) LOCKSTEP_THROW(DataError, where, ": dtype '", dname, "' is not supported (F32 F64 F16 BF16 I32 I64 U8)");
  if (!info.contains("shape") || !info["shape"].is_array() || info["shape"].size() > 16)
    LOCKSTEP_THROW(DataError, where, ": 'shape' must be an array of at most 16 dimensions");
  Entry e;
  e.tensor.name = name;
  e.tensor.dtype = *dtype;
  for (const json& d : info["shape"]) {
    if (!d.is_number_integer() || (!d.is_number_unsigned() && d.get<int64_t>() < 0) ||
        d.get<uint64_t>() > (uint64_t(1) << 62))
      LOCKSTEP_THROW(DataError, where, ": shape dimensions must be non-negative integers");
    e.tensor.shape.push_back(d.get<int64_t>());
  }
  const json* offs = info.contains("data_offsets") ? &info["data_offsets"] : nullptr;
  if (!offs || !offs->is_array() || offs->size() != 2)
    LOCKSTEP_THROW(DataError, where, ": 'data_offsets' must be [begin, end]");
  e.begin = offset_value((*offs)[0], where);
  e.end = offset_value((*offs)[1], where);
  if (e.begin > e.end || e.end > data_size)
    LOCKSTEP_THROW(DataError, where, ": data_offsets [", e.begin, ", ", e.end,
                   "] fall outside the ", data_size, " data bytes of the file (truncated?)");
  const int64_t numel = checked_numel(e.tensor.shape);
  uint64_t want = 0;
  if (numel < 0 || __builtin_mul_overflow(uint64_t(numel), dtype_size(*dtype), &want) ||
      want != e.end - e.begin)
    LOCKSTEP_THROW(DataError, where, ": shape and dtype need ", numel < 0 ? "too many" : std::to_string(want),
                   " bytes but data_offsets span ", e.end - e.begin);
  return e;
}

Metadata parse_metadata(const json& meta, const std::string& origin) {
  if (!meta.is_object())
    LOCKSTEP_THROW(DataError, origin, ": '__metadata__' must be an object of strings");
  Metadata out;
  for (const auto& [k, v] : meta.items()) {
    if (!v.is_string())
      LOCKSTEP_THROW(DataError, origin, ": '__metadata__' value of '", k, "' is not a string");
    out[k] = v.get<std::string>();
  }
  return out;
}

json parse_header_json(std::span<const uint8_t> bytes, uint64_t n, const std::string& origin) {
  std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, size_t(n));
  if (text.empty() || text.front() != '{')
    LOCKSTEP_THROW(DataError, origin, ": header does not start with '{' (not a safetensors file)");
  if (!json_nesting_within(text, 8))
    LOCKSTEP_THROW(DataError, origin, ": header JSON is nested too deeply");
  json header = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) LOCKSTEP_THROW(DataError, origin, ": header is not valid JSON");
  if (!header.is_object()) LOCKSTEP_THROW(DataError, origin, ": header is not a JSON object");
  return header;
}

}  // namespace

int64_t StoredTensor::numel() const { return checked_numel(shape); }

std::vector<float> StoredTensor::to_floats() const {
  const size_t n = bytes.size() / dtype_size(dtype);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = float(load_as_double(bytes.data(), dtype, i));
  return out;
}

const StoredTensor* SafetensorsData::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::string_view safetensors_dtype_name(DType t) {
  for (const auto& n : kNames)
    if (n.dtype == t) return n.name;
  return "?";
}

std::optional<DType> parse_safetensors_dtype(std::string_view name) {
  for (const auto& n : kNames)
    if (n.name == name) return n.dtype;
  return std::nullopt;
}

std::string safetensors_header(std::span<const TensorView> tensors, const Metadata& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || !names.insert(t.name).second)
      LOCKSTEP_THROW(InvalidArgument, "safetensors: empty, reserved or duplicate tensor name '",
                     t.name, "'");
    const int64_t numel = checked_numel(t.shape);
    if (numel < 0 || uint64_t(numel) * dtype_size(t.dtype) != t.bytes.size())
      LOCKSTEP_THROW(InvalidArgument, "safetensors: tensor '", t.name, "' has ", t.bytes.size(),
                     " bytes, which does not match its shape and dtype");
    header[t.name] = {{"dtype", safetensors_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string out(8, '\0');
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  return out + text;
}

std::vector<uint8_t> encode_safetensors(std::span<const TensorView> tensors,
                                        const Metadata& metadata) {
  const std::string header = safetensors_header(tensors, metadata);
  std::vector<uint8_t> out(header.begin(), header.end());
  for (const auto& t : tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

SafetensorsData decode_safetensors(std::span<const uint8_t> bytes, const std::string& origin) {
  if (bytes.size() < 8)
    LOCKSTEP_THROW(DataError, origin, ": file is ", bytes.size(),
                   " bytes, too short for a safetensors header length");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n > kMaxSafetensorsHeader)
    LOCKSTEP_THROW(DataError, origin, ": header length ", n, " exceeds the limit of ",
                   kMaxSafetensorsHeader, " bytes (corrupt file?)");
  if (n > bytes.size() - 8)
    LOCKSTEP_THROW(DataError, origin, ": header length ", n, " exceeds the file size ",
                   bytes.size(), " (truncated file?)");
  const json header = parse_header_json(bytes, n, origin);
  const uint64_t data_size = bytes.size() - 8 - n;
  SafetensorsData out;
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") out.metadata = parse_metadata(info, origin);
    else entries.push_back(parse_entry(name, info, data_size, origin));
  }
  // The tensors must tile the data region exactly: no overlap, no hole, nothing after.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t expect = 0;
  for (const auto& e : entries) {
    if (e.begin != expect)
      LOCKSTEP_THROW(DataError, origin, ": tensor '", e.tensor.name, "' starts at data offset ",
                     e.begin, " but the previous tensor ends at ", expect,
                     " (overlapping or gapped data)");
    expect = e.end;
  }
  if (expect != data_size)
    LOCKSTEP_THROW(DataError, origin, ": tensors cover ", expect, " of ", data_size,
                   " data bytes (trailing garbage or truncated header)");
  const uint8_t* data = bytes.data() + 8 + n;
  for (auto& e : entries) {
    e.tensor.bytes.assign(data + e.begin, data + e.end);
    out.tensors.push_back(std::move(e.tensor));
  }
  return out;
}

}  // namespace lockstep::train
