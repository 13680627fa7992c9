#include "lockstep/data/open.h"

#include <gtest/gtest.h>

#include "lockstep/core/error.h"
#include "lockstep/data/idx.h"
#include "test_util.h"

namespace lockstep::data {
namespace {

using testing::expect_error;
using testing::gzip_bytes;
using testing::idx_u8;
using testing::image_payload;
using testing::TempDir;
using testing::write_bytes;

TEST(OpenData, RecognisesIdxAndCifarDirectories) {
  TempDir idx;
  for (const char* split : {"train", "t10k"}) {
    write_bytes(idx.file(std::string(split) + "-images-idx3-ubyte.gz"),
                gzip_bytes(idx_u8({2, 3, 3}, image_payload(2, 3, 3))));
    write_bytes(idx.file(std::string(split) + "-labels-idx1-ubyte"), idx_u8({2}, {4, 5}));
  }
  DataSource s = find_image_data(idx.path());
  EXPECT_EQ(s.format, ImageFormat::idx);
  EXPECT_EQ(s.files.size(), 4u);
  EXPECT_EQ(load_image_data(s, Split::test).label(1), 5);

  TempDir cifar;
  std::vector<uint8_t> rec(3073, 1);
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                        "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"})
    write_bytes(cifar.file(f), rec);
  s = find_image_data(cifar.path());
  EXPECT_EQ(s.format, ImageFormat::cifar10);
  EXPECT_EQ(load_image_data(s, Split::train).size(), 5);
}

TEST(OpenData, IncompleteDirectorySaysWhatIsMissing) {
  TempDir dir;
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_u8({1, 1, 1}, {0}));
  expect_error<DataError>(
      [&] { find_image_data(dir.path()); },
      {dir.path(), "found 1 of the 4 MNIST-format files", "0 of the 6 CIFAR-10"});
  expect_error<DataError>([&] { find_image_data(dir.file("nope")); }, {"not a complete dataset"});
}

TEST(OpenData, FashionMnistByName) {
  if (!find_fashion_mnist_dir()) GTEST_SKIP() << "Fashion-MNIST not installed";
  DataSource s = find_image_data("fashion-mnist");
  EXPECT_EQ(s.format, ImageFormat::idx);
  EXPECT_EQ(s.dir, kDebianFashionMnistDir);
}

}  // namespace
}  // namespace lockstep::data
