// One entry point for a `--data` argument: a name or a directory, whose format is
// recognised from the files it holds. For the trainer and the launcher's pre-flight check.
//
//   DataSource src = find_image_data(args.data);   // cheap: checks files exist and are readable
//   Dataset train = load_image_data(src, Split::train);
#pragma once

#include <string>
#include <vector>

#include "lockstep/data/dataset.h"

namespace lockstep::data {

enum class ImageFormat : uint8_t { idx, cifar10 };

struct DataSource {
  ImageFormat format = ImageFormat::idx;
  std::string dir;
  std::vector<std::string> files;  // train and test files found (for messages and checks)
};

// `spec`: "" / "fashion-mnist" / "fmnist" (Debian's package directory), or a directory of
// MNIST-format IDX files or of CIFAR-10 binary batches. Opens every file for reading and
// checks its first bytes; DataError saying what to install or pass otherwise.
DataSource find_image_data(const std::string& spec);
Dataset load_image_data(const DataSource& src, Split split);

}  // namespace lockstep::data
