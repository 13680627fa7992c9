#include <gtest/gtest.h>

#include "lockstep/core/error.h"
#include "lockstep/data/cifar.h"
#include "lockstep/data/text.h"
#include "test_util.h"

namespace lockstep::data {
namespace {

using testing::expect_error;
using testing::gzip_bytes;
using testing::TempDir;
using testing::write_bytes;

// n CIFAR records: label i % 10, pixel k of record i = (i + k) & 255.
std::vector<uint8_t> cifar_records(size_t n, size_t first = 0) {
  std::vector<uint8_t> b;
  for (size_t i = first; i < first + n; ++i) {
    b.push_back(static_cast<uint8_t>(i % 10));
    for (size_t k = 0; k < 3072; ++k) b.push_back(static_cast<uint8_t>((i + k) & 255));
  }
  return b;
}

TEST(Cifar, ParsesRecordsAsChannelMajorImages) {
  Dataset d = parse_cifar10(cifar_records(4), "batch");
  ASSERT_EQ(d.size(), 4);
  EXPECT_EQ(d.sample_shape(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(d.label(3), 3);
  // Pixel (c=1, y=0, x=2) is byte 1 + 1024 + 2 of the record.
  EXPECT_EQ(d.u8_features(2)[1024 + 2], static_cast<uint8_t>((2 + 1026) & 255));
}

TEST(Cifar, LoadsTrainAndTestDirectoryLayout) {
  TempDir dir;
  for (int i = 1; i <= 5; ++i) {
    auto recs = cifar_records(2, static_cast<size_t>(2 * (i - 1)));
    // One batch gzipped, to show that compression is detected by content.
    write_bytes(dir.file("data_batch_" + std::to_string(i) + ".bin"),
                i == 3 ? gzip_bytes(recs) : recs);
  }
  write_bytes(dir.file("test_batch.bin"), cifar_records(3));
  Dataset train = load_cifar10(dir.path(), Split::train);
  EXPECT_EQ(train.size(), 10);
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(train.label(i), i % 10);
  EXPECT_EQ(load_cifar10(dir.path(), Split::test).size(), 3);
  std::filesystem::remove(dir.file("data_batch_4.bin"));
  expect_error<DataError>([&] { load_cifar10(dir.path(), Split::train); },
                          {"data_batch_4.bin", "is missing", "cifar-10-batches-bin"});
}

TEST(Cifar, CorruptFiles) {
  expect_error<DataError>([&] { parse_cifar10({}, "empty.bin"); }, {"empty.bin", "empty"});
  auto b = cifar_records(3);
  b.resize(b.size() - 100);
  expect_error<DataError>([&] { parse_cifar10(b, "cut.bin"); },
                          {"cut.bin", "truncated", "record 2 at offset 6146", "2973 bytes"});
  b = cifar_records(3);
  b[3073 * 2] = 10;
  expect_error<DataError>(
      [&] { parse_cifar10(b, "lab.bin"); },
      {"lab.bin", "label 10 of record 2", "byte offset 6146", "outside [0, 10)"});
}

TEST(Text, VocabAndNextCharTargets) {
  const std::string s = "hello world";
  std::vector<uint8_t> bytes(s.begin(), s.end());
  TextDataset t = parse_text(bytes, "hw.txt", 3);
  EXPECT_EQ(t.vocab.size(), 8);  // " dehlorw"
  EXPECT_EQ(t.vocab.byte_of(0), ' ');
  EXPECT_EQ(t.data.size(), 3);  // (11 - 1) / 3
  EXPECT_EQ(t.data.sample_shape(), (std::vector<int64_t>{3}));
  EXPECT_EQ(t.data.targets_per_sample(), 3);
  EXPECT_EQ(t.data.num_classes(), 8);
  auto in = t.data.u8_features(1);
  std::vector<int32_t> ids(in.begin(), in.end());
  EXPECT_EQ(t.vocab.decode(ids), "lo ");
  auto tg = t.data.targets(1);
  EXPECT_EQ(t.vocab.decode(std::vector<int32_t>(tg.begin(), tg.end())), "o w");
  EXPECT_EQ(t.vocab.encode("low"), (std::vector<int32_t>{4, 5, 7}));
  EXPECT_THROW(t.vocab.encode("z"), InvalidArgument);
  std::vector<float> f(3);
  t.data.copy_features(0, f);
  EXPECT_EQ(f[0], static_cast<float>(t.vocab.id_of('h')));  // token ids are not scaled
}

TEST(Text, FileErrors) {
  TempDir dir;
  write_bytes(dir.file("short.txt"), {'a', 'b'});
  expect_error<DataError>([&] { load_text(dir.file("short.txt"), 8); },
                          {"short.txt", "too short", "shorter sequence length"});
  write_bytes(dir.file("t.txt.gz"), gzip_bytes(std::vector<uint8_t>(100, 'x')));
  EXPECT_EQ(load_text(dir.file("t.txt.gz"), 9).data.size(), 11);
  EXPECT_THROW(load_text(dir.file("t.txt.gz"), 0), InvalidArgument);
  expect_error<DataError>([&] { load_text(dir.file("missing.txt"), 4); },
                          {"missing.txt", "cannot open"});
}

}  // namespace
}  // namespace lockstep::data
