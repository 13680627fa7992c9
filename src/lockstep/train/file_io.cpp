#include "lockstep/train/file_io.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "lockstep/core/error.h"

namespace lockstep::train {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw SystemError(err, str_cat(what, ": ", std::strerror(err)));
}

// A name in the same directory (rename must not cross file systems), unique per process
// and call, starting with '.' so directory listings skip it.
fs::path temp_name_for(const fs::path& final_path) {
  static std::atomic<uint64_t> counter{0};
  const std::string name = str_cat(".", final_path.filename().string(), ".tmp-", ::getpid(), "-",
                                   counter.fetch_add(1));
  return final_path.parent_path() / name;
}

}  // namespace

AtomicFile::AtomicFile(fs::path final_path, WriteHook hook)
    : final_(std::move(final_path)), temp_(temp_name_for(final_)), hook_(std::move(hook)) {
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw_errno(errno, str_cat("cannot create ", temp_.string(),
                               " (is the directory writable and on a mounted disk?)"));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::write(std::span<const uint8_t> bytes) {
  LOCKSTEP_CHECK(fd_ >= 0, "write after commit to ", final_.string());
  if (hook_) hook_(final_, size_);
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t chunk = std::min<size_t>(bytes.size() - done, size_t(1) << 30);
    const ssize_t n = ::write(fd_, bytes.data() + done, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(errno, str_cat("cannot write ", temp_.string(), " at byte ", size_ + done));
    done += size_t(n);
  }
  crc_ = crc32_update(crc_, bytes);
  size_ += bytes.size();
}

void AtomicFile::commit() {
  LOCKSTEP_CHECK(fd_ >= 0, "commit twice of ", final_.string());
  if (hook_) hook_(final_, size_);
  if (::fsync(fd_) != 0) throw_errno(errno, str_cat("cannot fsync ", temp_.string()));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw_errno(errno, str_cat("cannot close ", temp_.string()));
  if (::rename(temp_.c_str(), final_.c_str()) != 0)
    throw_errno(errno, str_cat("cannot rename ", temp_.string(), " to ", final_.string()));
  temp_.clear();
  fsync_dir(final_.parent_path().empty() ? fs::path(".") : final_.parent_path());
}

void write_file_atomic(const fs::path& path, std::span<const uint8_t> bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

void write_file_atomic(const fs::path& path, std::string_view text) {
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno, str_cat("cannot open directory ", dir.string(), " to fsync it"));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw_errno(err, str_cat("cannot fsync directory ", dir.string()));
}

void fsync_file(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno, str_cat("cannot open ", file.string(), " to fsync it"));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw_errno(err, str_cat("cannot fsync ", file.string()));
}

std::vector<uint8_t> read_file_bounded(const fs::path& path, uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) LOCKSTEP_THROW(DataError, path.string(), ": cannot open: ", std::strerror(errno));
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      LOCKSTEP_THROW(DataError, path.string(), ": read failed: ", std::strerror(err));
    }
    if (n == 0) break;
    if (out.size() + size_t(n) > max_bytes) {
      ::close(fd);
      LOCKSTEP_THROW(DataError, path.string(), ": file is larger than the limit of ", max_bytes,
                     " bytes");
    }
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

uint32_t crc32_update(uint32_t crc, std::span<const uint8_t> bytes) {
  return uint32_t(::crc32_z(crc, bytes.data(), bytes.size()));
}

}  // namespace lockstep::train
