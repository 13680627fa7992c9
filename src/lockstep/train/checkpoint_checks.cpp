#include "lockstep/train/checkpoint_checks.h"

#include <cstring>
#include <optional>

#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/file_io.h"

namespace lockstep::train {

namespace {

constexpr const char* kOlder = "; resume from an older checkpoint";

// The exponent and mantissa masks of a floating-point dtype's bit pattern (exponent all ones:
// Inf when the mantissa is 0, NaN otherwise).
struct FloatBits {
  size_t bytes;
  uint64_t exponent, mantissa;
};

std::optional<FloatBits> float_bits(DType t) {
  switch (t) {
    case DType::f32:
      return FloatBits{4, 0x7f800000u, 0x007fffffu};
    case DType::f64:
      return FloatBits{8, 0x7ff0000000000000ull, 0x000fffffffffffffull};
    case DType::f16:
      return FloatBits{2, 0x7c00u, 0x03ffu};
    case DType::bf16:
      return FloatBits{2, 0x7f80u, 0x007fu};
    default:
      return std::nullopt;
  }
}

// The first non-finite element of a tensor, and whether it is a NaN; -1 when all are finite.
std::pair<int64_t, bool> first_nonfinite(const StoredTensor& t) {
  const auto fb = float_bits(t.dtype);
  if (!fb) return {-1, false};
  const int64_t n = int64_t(t.bytes.size() / fb->bytes);
  for (int64_t i = 0; i < n; ++i) {
    uint64_t bits = 0;  // little-endian file, little-endian host (as the decoder assumes)
    std::memcpy(&bits, t.bytes.data() + size_t(i) * fb->bytes, fb->bytes);
    if ((bits & fb->exponent) == fb->exponent) return {i, (bits & fb->mantissa) != 0};
  }
  return {-1, false};
}

}  // namespace

uint32_t manifest_checksum(nlohmann::json manifest) {
  if (manifest.is_object()) manifest.erase(kManifestChecksumKey);
  const std::string text = manifest.dump();
  return crc32_of({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

bool verify_manifest_checksum(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object() || !j.contains(kManifestChecksumKey)) return false;
  const nlohmann::json& v = j[kManifestChecksumKey];
  if (!v.is_number_unsigned() || v.get<uint64_t>() > 0xffffffffull)
    LOCKSTEP_THROW(DataError, origin, ": field '", kManifestChecksumKey,
                   "' is not a 32-bit unsigned integer", kOlder);
  const uint32_t want = v.get<uint32_t>(), got = manifest_checksum(j);
  if (want != got)
    LOCKSTEP_THROW(DataError, origin, ": the fields of state.json do not match its '",
                   kManifestChecksumKey, "' (", want, "; they sum to ", got,
                   "): the file was edited or damaged after it was saved", kOlder);
  return true;
}

void check_step_matches_dir_name(const std::filesystem::path& checkpoint_dir, const Manifest& m) {
  const std::string name = checkpoint_dir.filename().string();
  const int64_t named = checkpoint_step_of(name);
  if (named >= 0 && named != m.step)
    LOCKSTEP_THROW(DataError, (checkpoint_dir / "state.json").string(), ": field 'step' is ",
                   m.step, " but the directory is ", name, " (step ", named,
                   "); the manifest was edited or "
                   "the directory renamed",
                   kOlder);
}

void check_tensor_file(const SafetensorsData& d, const Manifest& m, const std::string& origin) {
  const auto step = d.metadata.find("lockstep.step");
  if (step != d.metadata.end() && step->second != std::to_string(m.step))
    LOCKSTEP_THROW(DataError, origin, ": written at step ", step->second,
                   " (metadata 'lockstep.step') but "
                   "state.json's field 'step' is ",
                   m.step, "; the files belong to different checkpoints", kOlder);
  const auto model = d.metadata.find("lockstep.model");
  if (model != d.metadata.end() && model->second != m.model)
    LOCKSTEP_THROW(DataError, origin, ": written for model '", model->second,
                   "' (metadata 'lockstep.model') "
                   "but state.json's field 'model' is '",
                   m.model, "'", kOlder);
  for (const StoredTensor& t : d.tensors) {
    const auto [at, nan] = first_nonfinite(t);
    if (at >= 0)
      LOCKSTEP_THROW(DataError, origin, ": tensor '", t.name, "' holds ", nan ? "NaN" : "Inf",
                     " at element ", at, " of ", t.numel(),
                     " (its checksum is valid: it was saved so, from a model that had "
                     "diverged); training on from it would fail at once",
                     kOlder);
  }
}

}  // namespace lockstep::train
