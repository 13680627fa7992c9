// Reading data files whole into memory, gunzipping when they start with the gzip magic.
// Sizes are bounded: a file larger than the limit, or one that inflates beyond it (a gzip
// bomb), is a DataError instead of an allocation of whatever the file claims.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lockstep::data {

inline constexpr size_t kMaxDataFileBytes = size_t{4} << 30;  // 4 GiB, raw or inflated

// The bytes of a file; DataError (naming the path and the OS error) when it cannot be read.
std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes = kMaxDataFileBytes);

bool is_gzip(std::span<const uint8_t> bytes);

// Inflates gzip data (one or more concatenated members, as `gzip -d` accepts). `name`
// appears in errors; DataError on corrupt, truncated or oversized data.
std::vector<uint8_t> gunzip(std::span<const uint8_t> bytes, const std::string& name,
                            size_t max_bytes = kMaxDataFileBytes);

// Inflates no more than the first `max_bytes` of gzip data and returns them (all of it,
// checked to its end, when it is shorter): for formats whose header declares their size.
// DataError on corrupt or truncated data within that prefix.
std::vector<uint8_t> gunzip_prefix(std::span<const uint8_t> bytes, const std::string& name,
                                   size_t max_bytes);

// read_file, then gunzip when the content is gzip (whatever the file name says).
std::vector<uint8_t> read_data_file(const std::string& path, size_t max_bytes = kMaxDataFileBytes);

bool file_exists(const std::string& path);

}  // namespace lockstep::data
