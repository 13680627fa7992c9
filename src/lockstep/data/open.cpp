#include "lockstep/data/open.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/data/cifar.h"
#include "lockstep/data/file_reader.h"
#include "lockstep/data/idx.h"

namespace lockstep::data {

namespace {

// Reading the first bytes catches unreadable files (permissions, broken mounts) on every
// rank before training starts, without loading anything.
void check_readable(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    LOCKSTEP_THROW(DataError, path, ": cannot open: ", std::strerror(errno),
                   "; check the path and its permissions on this host");
  }
  char buf[4];
  const ssize_t r = ::read(fd, buf, sizeof buf);
  const int err = errno;
  ::close(fd);
  if (r < 0) {
    LOCKSTEP_THROW(DataError, path, ": cannot read: ", std::strerror(err),
                   "; check the file system holding it");
  }
}

std::vector<std::string> existing(const std::string& dir, const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& n : names) {
    for (const char* ext : {"", ".gz"}) {
      std::string path = str_cat(dir, "/", n, ext);
      if (file_exists(path)) {
        out.push_back(std::move(path));
        break;
      }
    }
  }
  return out;
}

}  // namespace

DataSource find_image_data(const std::string& spec) {
  DataSource src;
  if (spec.empty() || spec == "fashion-mnist" || spec == "fmnist") {
    auto dir = find_fashion_mnist_dir();
    if (!dir) {
      LOCKSTEP_THROW(DataError, "Fashion-MNIST not found in ", kDebianFashionMnistDir,
                     "; install it with 'apt-get install dataset-fashion-mnist' or pass the "
                     "directory holding its IDX files");
    }
    src.dir = *dir;
  } else {
    src.dir = spec;
  }
  const std::vector<std::string> idx_names = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
  const std::vector<std::string> cifar_names = {"data_batch_1.bin", "data_batch_2.bin",
                                                "data_batch_3.bin", "data_batch_4.bin",
                                                "data_batch_5.bin", "test_batch.bin"};
  auto idx = existing(src.dir, idx_names);
  auto cifar = existing(src.dir, cifar_names);
  if (idx.size() == idx_names.size()) {
    src.format = ImageFormat::idx;
    src.files = idx;
  } else if (cifar.size() == cifar_names.size()) {
    src.format = ImageFormat::cifar10;
    src.files = cifar;
  } else {
    LOCKSTEP_THROW(DataError, "'", src.dir, "' is not a complete dataset directory: found ",
                   idx.size(),
                   " of the 4 MNIST-format files ({train,t10k}-{images-idx3,"
                   "labels-idx1}-ubyte[.gz]) and ",
                   cifar.size(),
                   " of the 6 CIFAR-10 binary "
                   "files (data_batch_1..5.bin, test_batch.bin); pass a directory holding one "
                   "of them, or 'fashion-mnist'");
  }
  for (const auto& f : src.files) {
    check_readable(f);
  }
  return src;
}

Dataset load_image_data(const DataSource& src, Split split) {
  return src.format == ImageFormat::idx ? load_mnist(src.dir, split) : load_cifar10(src.dir, split);
}

}  // namespace lockstep::data
