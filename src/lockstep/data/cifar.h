// CIFAR-10 in its binary form (cifar-10-batches-bin): each file is a run of 3073-byte
// records, one label byte (0..9) then 3x32x32 pixel bytes in channel-major order (R, G, B
// planes), which is already the C x H x W layout of a batch.
//
//   Dataset train = load_cifar10("/data/cifar-10-batches-bin", Split::train);
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lockstep/data/dataset.h"

namespace lockstep::data {

inline constexpr int64_t kCifarChannels = 3, kCifarSide = 32;
inline constexpr size_t kCifarRecordBytes = 1 + kCifarChannels * kCifarSide * kCifarSide;  // 3073

// Parses one in-memory batch file; `name` appears in errors.
Dataset parse_cifar10(std::span<const uint8_t> bytes, const std::string& name);
// Reads and concatenates batch files (gzipped or not), in the order given.
Dataset load_cifar10_files(const std::vector<std::string>& paths);
// A cifar-10-batches-bin directory: data_batch_1..5.bin for train, test_batch.bin for test.
Dataset load_cifar10(const std::string& dir, Split split);

}  // namespace lockstep::data
