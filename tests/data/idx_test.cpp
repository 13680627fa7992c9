#include "lockstep/data/idx.h"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/data/file_reader.h"
#include "test_util.h"

namespace lockstep::data {
namespace {

using testing::expect_error;
using testing::gzip_bytes;
using testing::idx_u8;
using testing::image_payload;
using testing::TempDir;
using testing::write_bytes;

struct IdxFiles {
  TempDir dir;
  std::string images, labels;
};

// 5 images of 4x3 with labels 0..4, written raw or gzipped.
IdxFiles write_pair(bool gz, uint32_t n_labels = 5) {
  IdxFiles f;
  auto img = idx_u8({5, 4, 3}, image_payload(5, 4, 3));
  std::vector<uint8_t> lab_payload;
  for (uint32_t i = 0; i < n_labels; ++i) lab_payload.push_back(static_cast<uint8_t>(i % 10));
  auto lab = idx_u8({n_labels}, lab_payload);
  f.images = f.dir.file(gz ? "imgs.gz" : "imgs");
  f.labels = f.dir.file(gz ? "labs.gz" : "labs");
  write_bytes(f.images, gz ? gzip_bytes(img) : img);
  write_bytes(f.labels, gz ? gzip_bytes(lab) : lab);
  return f;
}

TEST(Idx, ParsesRawAndGzippedFiles) {
  for (bool gz : {false, true}) {
    IdxFiles f = write_pair(gz);
    Dataset d = load_idx_dataset(f.images, f.labels);
    ASSERT_EQ(d.size(), 5);
    EXPECT_EQ(d.sample_shape(), (std::vector<int64_t>{1, 4, 3}));
    EXPECT_EQ(d.kind(), FeatureKind::image_u8);
    EXPECT_EQ(d.num_classes(), 10);
    for (int64_t i = 0; i < 5; ++i) {
      EXPECT_EQ(d.label(i), i);
      EXPECT_EQ(d.u8_features(i)[5], static_cast<uint8_t>(i * 7 + 5));
    }
    std::vector<float> x(12);
    d.copy_features(2, x);
    EXPECT_FLOAT_EQ(x[1], 15.0f / 255.0f);
  }
}

TEST(Idx, ParsesWiderTypesInHostOrder) {
  std::vector<uint8_t> b = {0, 0, 0x0C, 1};
  testing::put_be32(b, 2);
  testing::put_be32(b, 0x01020304);
  testing::put_be32(b, 0xfffffffe);
  IdxArray a = parse_idx(b, "ints");
  ASSERT_EQ(a.type, IdxType::i32);
  int32_t v[2];
  std::memcpy(v, a.data.data(), 8);
  EXPECT_EQ(v[0], 0x01020304);
  EXPECT_EQ(v[1], -2);
}

TEST(Idx, BadMagicNamesFileAndValue) {
  std::vector<uint8_t> b = idx_u8({2}, {0, 1});
  b[2] = 0x07;
  expect_error<DataError>([&] { parse_idx(b, "x.idx"); },
                          {"x.idx", "bad IDX magic number 0x00000701", "offset 0", "re-download"});
  b = {'<', 'h', 't', 'm', 'l', '>'};
  expect_error<DataError>([&] { parse_idx(b, "page"); }, {"page", "bad IDX magic"});
  // A gzip file handed to the raw parser says so.
  expect_error<DataError>([&] { parse_idx(gzip_bytes(idx_u8({1}, {1})), "z"); },
                          {"still gzip-compressed"});
  b = idx_u8({1}, {1});
  b[3] = 0;  // zero dimensions
  expect_error<DataError>([&] { parse_idx(b, "d0"); }, {"bad IDX magic"});
}

TEST(Idx, TruncatedHeaderAndData) {
  expect_error<DataError>(
      [&] {
        parse_idx(std::vector<uint8_t>{0, 0}, "t");
      },
      {"t: truncated IDX header", "2 bytes"});
  std::vector<uint8_t> b = idx_u8({3, 28, 28}, {});
  b.resize(10);
  expect_error<DataError>([&] { parse_idx(b, "t"); }, {"truncated IDX header", "16 header bytes"});
  b = idx_u8({3, 28, 28}, std::vector<uint8_t>(100));
  expect_error<DataError>([&] { parse_idx(b, "imgs"); },
                          {"imgs: truncated IDX data", "3x28x28", "only 100 bytes"});
  // Sizes whose product overflows 64 bits must not be trusted.
  b = idx_u8({0xffffffffu, 0xffffffffu, 0xffffffffu}, std::vector<uint8_t>(8));
  expect_error<DataError>([&] { parse_idx(b, "huge"); }, {"truncated IDX data"});
  b = idx_u8({2}, {1, 2, 3});
  expect_error<DataError>([&] { parse_idx(b, "long"); }, {"1 unexpected bytes", "offset 10"});
}

TEST(Idx, ZeroSizedDimensions) {
  // An empty file is valid IDX; a zero image side is not a usable dataset.
  IdxArray a = parse_idx(idx_u8({0, 28, 28}, {}), "empty");
  EXPECT_EQ(a.count(), 0u);
  EXPECT_TRUE(a.data.empty());
  Dataset d = idx_to_dataset(a, "empty", parse_idx(idx_u8({0}, {}), "labels"), "labels", 10);
  EXPECT_EQ(d.size(), 0);
  IdxArray flat = parse_idx(idx_u8({2, 0, 3}, {}), "flat");
  expect_error<DataError>(
      [&] {
        idx_to_dataset(flat, "flat", parse_idx(idx_u8({2}, {0, 1}), "l"), "l", 10);
      },
      {"flat", "zero dimension"});
}

TEST(Idx, WrongDimsAndCountMismatch) {
  TempDir dir;
  auto img = idx_u8({5, 4, 3}, image_payload(5, 4, 3));
  auto lab = idx_u8({5}, {0, 1, 2, 3, 4});
  write_bytes(dir.file("i"), img);
  write_bytes(dir.file("l"), lab);
  // Swapped files: labels given as images.
  expect_error<DataError>([&] { load_idx_dataset(dir.file("l"), dir.file("i")); },
                          {dir.file("l"), "images must have 3 dimensions", "labels file"});
  expect_error<DataError>([&] { load_idx_dataset(dir.file("i"), dir.file("i")); },
                          {"labels must have 1 dimension"});
  IdxFiles f = write_pair(false, 6);
  expect_error<DataError>([&] { load_idx_dataset(f.images, f.labels); },
                          {"has 5 images but", "has 6 labels", "matching pair"});
}

TEST(Idx, LabelOutOfRange) {
  TempDir dir;
  write_bytes(dir.file("i"), idx_u8({2, 1, 1}, {0, 0}));
  write_bytes(dir.file("l"), idx_u8({2}, {3, 12}));
  expect_error<DataError>([&] { load_idx_dataset(dir.file("i"), dir.file("l")); },
                          {"label 12 of sample 1", "byte offset 9", "outside [0, 10)"});
}

TEST(Idx, BadGzip) {
  TempDir dir;
  auto gz = gzip_bytes(idx_u8({5, 4, 3}, image_payload(5, 4, 3)));
  auto cut = gz;
  cut.resize(gz.size() / 2);
  write_bytes(dir.file("cut.gz"), cut);
  expect_error<DataError>([&] { load_idx(dir.file("cut.gz")); },
                          {dir.file("cut.gz"), "gzip data is truncated", "re-download"});
  auto bad = gz;
  for (size_t i = 10; i < bad.size() - 8; ++i) bad[i] ^= 0x5a;
  write_bytes(dir.file("bad.gz"), bad);
  expect_error<DataError>([&] { load_idx(dir.file("bad.gz")); }, {dir.file("bad.gz"), "gzip"});
  auto trailing = gz;
  trailing.push_back(7);
  write_bytes(dir.file("trail.gz"), trailing);
  expect_error<DataError>([&] { load_idx(dir.file("trail.gz")); },
                          {"unexpected bytes after the gzip data", "offset"});
  // Concatenated members are one stream, as gzip -d treats them.
  auto two = gzip_bytes({0, 0, 8, 1, 0, 0});
  auto rest = gzip_bytes({0, 2, 9, 9});
  two.insert(two.end(), rest.begin(), rest.end());
  write_bytes(dir.file("two.gz"), two);
  EXPECT_EQ(load_idx(dir.file("two.gz")).count(), 2u);
}

TEST(Idx, GzipBombIsBounded) {
  auto gz = gzip_bytes(std::vector<uint8_t>(1 << 20));
  expect_error<DataError>([&] { gunzip(gz, "bomb", 1 << 16); },
                          {"bomb", "inflates to more than 65536 bytes"});
}

// A gzip stream of `idx` followed by `zeros` zero bytes, deflated chunk by chunk.
std::vector<uint8_t> gzip_padded(const std::vector<uint8_t>& idx, size_t zeros) {
  z_stream z{};
  deflateInit2(&z, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::vector<uint8_t> out(zeros / 128 + (1 << 16));
  const std::vector<uint8_t> chunk(1 << 20);
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  z.next_in = const_cast<Bytef*>(idx.data());
  z.avail_in = static_cast<uInt>(idx.size());
  deflate(&z, Z_NO_FLUSH);
  for (size_t left = zeros; left > 0; left -= std::min(left, chunk.size())) {
    z.next_in = const_cast<Bytef*>(chunk.data());
    z.avail_in = static_cast<uInt>(std::min(left, chunk.size()));
    deflate(&z, Z_NO_FLUSH);
  }
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END) << "output buffer too small";
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

int64_t max_rss_kib() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// A 16-byte IDX file followed by 128 MiB of zeros (a 0.6 MB .gz) is refused after
// inflating one byte past its header's declared size, not 128 MiB. Measured in a forked
// child, whose peak RSS starts at its own size: the old reader's grew by 130 MiB, this one's
// by 2-4 MiB; the bound of 32 MiB leaves room for the file and the sanitizers.
TEST(Idx, GzipPastTheDeclaredSizeIsNotInflated) {
  TempDir dir;
  const std::string path = dir.file("bomb-idx1-ubyte.gz");
  write_bytes(path, gzip_padded(idx_u8({16}, std::vector<uint8_t>(16, 1)), size_t{128} << 20));
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int64_t before = max_rss_kib();
    std::string msg;
    try {
      load_idx(path);
    } catch (const DataError& e) {
      msg = e.what();
    }
    const int64_t grew_mib = (max_rss_kib() - before) >> 10;
    std::fprintf(stderr, "peak RSS grew by %lld MiB; error: %s\n", static_cast<long long>(grew_mib),
                 msg.c_str());
    const bool named = msg.find(path) != std::string::npos &&
                       msg.find("past the 24 bytes its IDX header declares") != std::string::npos;
    ::_exit(!named ? 2 : grew_mib >= 32 ? 3 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: error not as expected, 3: peak memory not bounded";
}

TEST(Idx, MissingFilesSayWhatToDo) {
  TempDir dir;
  expect_error<DataError>([&] { load_idx(dir.file("nope")); },
                          {dir.file("nope"), "cannot open", "No such file"});
  expect_error<DataError>([&] { load_mnist(dir.path(), Split::train); },
                          {"train-images-idx3-ubyte.gz", "dataset-fashion-mnist"});
}

TEST(Idx, LoadMnistDirectoryLayout) {
  TempDir dir;
  write_bytes(dir.file("t10k-images-idx3-ubyte.gz"),
              gzip_bytes(idx_u8({2, 2, 2}, image_payload(2, 2, 2))));
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx_u8({2}, {9, 1}));
  Dataset d = load_mnist(dir.path(), Split::test);
  EXPECT_EQ(d.size(), 2);
  EXPECT_EQ(d.label(0), 9);
  // Only the test split is there, so the directory does not count as Fashion-MNIST.
  EXPECT_NE(find_fashion_mnist_dir({dir.path()}), std::optional<std::string>(dir.path()));
}

}  // namespace
}  // namespace lockstep::data
