// Crash-safe replacement of a file (AtomicFile, write_file_atomic): until the new contents are
// complete, the file under its final name holds the complete old contents — observed while the
// replacement is being written, after a writer that fails midway, and through a descriptor
// opened on the old file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "lockstep/core/error.h"
#include "lockstep/train/file_io.h"
#include "test_util.h"

namespace lockstep::train {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

// `n` bytes of a pattern that differs per tag, so that a mix of two versions shows.
std::string pattern(char tag, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char(tag + char(i % 23));
  return s;
}

size_t entries(const fs::path& dir) {
  return size_t(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(AtomicFile, TheFinalNameHoldsTheCompleteOldFileUntilCommit) {
  const auto dir = fresh_dir("file_io");
  const fs::path path = dir / "run.json";
  const std::string old_text = pattern('a', 100000), chunk = pattern('K', 40000);
  write_file_atomic(path, old_text);
  int checks = 0;
  {
    // The hook runs before every write and before commit's rename: each time the final name
    // must still show every byte of the old file.
    AtomicFile f(path, [&](const fs::path& file, uint64_t offset) {
      EXPECT_EQ(file, path);
      ++checks;
      const std::string now = read_all(path);
      EXPECT_TRUE(now == old_text)
          << "before writing byte " << offset << " of the replacement, " << path << " holds "
          << now.size() << " bytes, not the old " << old_text.size();
    });
    for (int k = 0; k < 3; ++k) f.write(chunk);
    f.commit();
  }
  EXPECT_EQ(checks, 4);  // three writes and the commit
  EXPECT_TRUE(read_all(path) == chunk + chunk + chunk) << "the complete new contents after commit";
  EXPECT_EQ(entries(dir), 1u) << "a temporary was left behind";
}

TEST(AtomicFile, AWriterThatFailsMidwayLeavesTheOldFileAndNoTemporary) {
  const auto dir = fresh_dir("file_io");
  const fs::path path = dir / "metrics.jsonl";
  const std::string old_text = pattern('a', 70000), chunk = pattern('K', 30000);
  write_file_atomic(path, old_text);
  for (int fail_at = 0; fail_at < 4; ++fail_at) {  // before write 1, 2, 3, and before commit
    int calls = 0;
    try {
      AtomicFile f(path, [&](const fs::path&, uint64_t) {
        if (calls++ == fail_at) throw SystemError(ENOSPC, "injected: disk full");
      });
      for (int k = 0; k < 3; ++k) f.write(chunk);
      f.commit();
      ADD_FAILURE() << "the injected failure did not surface, fail_at=" << fail_at;
    } catch (const SystemError& e) {
      EXPECT_NE(std::string(e.what()).find("injected"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(read_all(path) == old_text)
        << "fail_at=" << fail_at << ": " << path << " no longer holds the old file";
    EXPECT_EQ(entries(dir), 1u) << "fail_at=" << fail_at << ": a temporary was left behind";
  }
}

// A reader that opened the old file keeps reading the old bytes: the replacement is a new file
// renamed over the name, not the old one truncated and rewritten.
TEST(AtomicFile, AReaderOfTheOldFileIsNotDisturbedByItsReplacement) {
  const auto dir = fresh_dir("file_io");
  const fs::path path = dir / "run.json";
  const std::string old_text = pattern('a', 50000), new_text = pattern('K', 20000);
  write_file_atomic(path, old_text);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  write_file_atomic(path, new_text);
  std::string seen(old_text.size() + 1, '\0');
  const ssize_t n = ::pread(fd, seen.data(), seen.size(), 0);
  ::close(fd);
  seen.resize(n < 0 ? 0 : size_t(n));
  EXPECT_TRUE(seen == old_text) << "the old file changed under its reader: " << seen.size()
                                << " bytes";
  EXPECT_TRUE(read_all(path) == new_text);
  EXPECT_EQ(entries(dir), 1u);
}

}  // namespace
}  // namespace lockstep::train
