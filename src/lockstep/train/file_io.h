// Crash-safe file writing for checkpoints and run records: AtomicFile writes under a
// temporary name in the target directory, fsyncs the file, renames it over the final name and
// fsyncs the directory, so a reader sees the old file or the complete new one — never a torn
// one. A write that fails (disk full, crash, exception) leaves the old file untouched and the
// temporary removed.
//
//   AtomicFile f(dir / "run.json");
//   f.write(bytes);
//   f.commit();   // without commit() the destructor removes the temporary
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::train {

// Called before every write with the file and the bytes written so far; throwing from it
// simulates a failure at that point (fault-injection tests).
using WriteHook = std::function<void(const std::filesystem::path& file, uint64_t offset)>;

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path final_path, WriteHook hook = {});
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends bytes; SystemError naming the file on failure (ENOSPC, EIO, ...).
  void write(std::span<const uint8_t> bytes);
  void write(std::string_view text) {
    write({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  }
  // fsync, rename over the final name, fsync the directory.
  void commit();

  uint64_t size() const { return size_; }
  uint32_t crc32() const { return crc_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  std::filesystem::path final_;
  std::filesystem::path temp_;
  WriteHook hook_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint32_t crc_ = 0;
};

// Writes a whole file atomically.
void write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> bytes);
void write_file_atomic(const std::filesystem::path& path, std::string_view text);

// fsync of a directory, so that a rename or create in it survives a power cut.
void fsync_dir(const std::filesystem::path& dir);
// fsync of an existing file.
void fsync_file(const std::filesystem::path& file);

// Reads a whole file of at most max_bytes; DataError naming the file when it is missing,
// unreadable or larger.
std::vector<uint8_t> read_file_bounded(const std::filesystem::path& path, uint64_t max_bytes);

// CRC-32 (zlib's polynomial), continuing from `crc` (0 to start).
uint32_t crc32_update(uint32_t crc, std::span<const uint8_t> bytes);
inline uint32_t crc32_of(std::span<const uint8_t> bytes) { return crc32_update(0, bytes); }

}  // namespace lockstep::train
