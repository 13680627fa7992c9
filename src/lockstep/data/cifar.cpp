#include "lockstep/data/cifar.h"

#include "lockstep/core/error.h"
#include "lockstep/data/file_reader.h"

namespace lockstep::data {

Dataset parse_cifar10(std::span<const uint8_t> b, const std::string& name) {
  if (b.empty()) {
    LOCKSTEP_THROW(DataError, name, ": empty CIFAR-10 batch file; re-download it");
  }
  if (b.size() % kCifarRecordBytes != 0) {
    const size_t whole = b.size() / kCifarRecordBytes;
    LOCKSTEP_THROW(DataError, name, ": truncated CIFAR-10 batch: ", b.size(),
                   " bytes is not a whole number of ", kCifarRecordBytes,
                   "-byte records (label + 3x32x32 pixels); record ", whole, " at offset ",
                   whole * kCifarRecordBytes, " has only ", b.size() % kCifarRecordBytes,
                   " bytes; re-download the file (CIFAR-100 files, with 2 label bytes, are "
                   "not supported)");
  }
  const size_t n = b.size() / kCifarRecordBytes;
  const size_t pixels = kCifarRecordBytes - 1;
  std::vector<int32_t> labels(n);
  std::vector<uint8_t> features(n * pixels);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* rec = b.data() + i * kCifarRecordBytes;
    if (rec[0] > 9) {
      LOCKSTEP_THROW(DataError, name, ": label ", int(rec[0]), " of record ", i, " (byte offset ",
                     i * kCifarRecordBytes,
                     ") is outside [0, 10); the file "
                     "is corrupt or not a CIFAR-10 binary batch, re-download it");
    }
    labels[i] = rec[0];
    std::copy(rec + 1, rec + kCifarRecordBytes, features.begin() + i * pixels);
  }
  return Dataset::from_u8(name, FeatureKind::image_u8, {kCifarChannels, kCifarSide, kCifarSide},
                          std::move(features), std::move(labels), 1, 10);
}

Dataset load_cifar10_files(const std::vector<std::string>& paths) {
  if (paths.empty()) {
    LOCKSTEP_THROW(InvalidArgument, "load_cifar10_files: no files given");
  }
  Dataset all;
  for (size_t i = 0; i < paths.size(); ++i) {
    Dataset d = parse_cifar10(read_data_file(paths[i]), paths[i]);
    if (i == 0) {
      all = std::move(d);
    } else {
      all.append(d);
    }
  }
  return all;
}

Dataset load_cifar10(const std::string& dir, Split split) {
  std::vector<std::string> paths;
  if (split == Split::train) {
    for (int i = 1; i <= 5; ++i) {
      paths.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
    }
  } else {
    paths.push_back(dir + "/test_batch.bin");
  }
  for (const auto& p : paths) {
    if (!file_exists(p)) {
      LOCKSTEP_THROW(DataError, "CIFAR-10 ", split_name(split), " split incomplete: '", p,
                     "' is missing; pass the 'cifar-10-batches-bin' directory of the binary "
                     "version (data_batch_1..5.bin, test_batch.bin)");
    }
  }
  return load_cifar10_files(paths);
}

}  // namespace lockstep::data
