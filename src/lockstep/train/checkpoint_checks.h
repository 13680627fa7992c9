// Checks of a checkpoint beyond its tensor files' sizes and CRC-32s, so that an edited
// state.json or a tensor holding NaN/Inf is refused when the checkpoint is loaded, not
// trained on (checkpoint.cpp calls them; the resume-time checks are in train_state.h):
//   - state.json records "manifest_crc32", the CRC-32 of its own JSON without that field
//     (written compact, keys in order, as nlohmann::json dumps it), so an edited value is
//     found. A state.json without it (written by a lockstep from before the field) is read
//     with a warning: its fields are still cross-checked, but an edit could go unseen.
//   - its step agrees with the directory's step-N name and with the "lockstep.step" (and its
//     model with "lockstep.model") that every tensor file written by lockstep records.
//   - every floating-point tensor holds finite values only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "lockstep/train/safetensors.h"

namespace lockstep::train {

struct Manifest;

inline constexpr const char* kManifestChecksumKey = "manifest_crc32";

// The CRC-32 of `manifest` (a state.json object) with kManifestChecksumKey left out.
uint32_t manifest_checksum(nlohmann::json manifest);
// True when `manifest` carries a checksum and it matches; false when it has none. DataError
// naming `origin` and the field when it does not match (or is not a 32-bit integer).
bool verify_manifest_checksum(const nlohmann::json& manifest, const std::string& origin);

// DataError naming the state.json of `checkpoint_dir` when its step is not the directory's
// (a step-N name; other names are not checked).
void check_step_matches_dir_name(const std::filesystem::path& checkpoint_dir, const Manifest& m);
// DataError naming `origin` (a tensor file) when its metadata records another step or model
// than state.json, or when a floating-point tensor holds a NaN or an Inf.
void check_tensor_file(const SafetensorsData& d, const Manifest& m, const std::string& origin);

}  // namespace lockstep::train
