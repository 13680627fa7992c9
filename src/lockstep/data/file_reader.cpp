#include "lockstep/data/file_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "lockstep/core/error.h"

namespace lockstep::data {

namespace {

// Closes the descriptor on every path out of read_file.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
};

[[noreturn]] void throw_os(const std::string& path, const char* what, int err) {
  LOCKSTEP_THROW(DataError, path, ": cannot ", what, ": ", std::strerror(err),
                 "; check that the path is right and readable (or pass another data directory)");
}

}  // namespace

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) {
    throw_os(path, "open", errno);
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) {
    throw_os(path, "stat", errno);
  }
  if (!S_ISREG(st.st_mode)) {
    LOCKSTEP_THROW(DataError, path, ": not a regular file; pass the path of a data file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    LOCKSTEP_THROW(DataError, path, ": file is ", size, " bytes, more than the limit of ",
                   max_bytes, " bytes; is this the right file?");
  }
  std::vector<uint8_t> out(static_cast<size_t>(size));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::read(f.fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r < 0) {
      throw_os(path, "read", errno);
    }
    if (r == 0) {
      LOCKSTEP_THROW(DataError, path, ": file shrank while reading (got ", got, " of ", size,
                     " bytes); is another process writing it?");
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

bool is_gzip(std::span<const uint8_t> b) {
  return b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

namespace {

// RAII for a z_stream.
struct Inflater {
  z_stream z{};
  bool ok = false;
  Inflater() { ok = inflateInit2(&z, 16 + MAX_WBITS) == Z_OK; }  // 16: gzip wrapper only
  ~Inflater() {
    if (ok) {
      inflateEnd(&z);
    }
  }
};

// The gzip trailer's ISIZE (size mod 2^32 of the last member) is only a hint: it is
// clamped by the limit and by deflate's maximum ratio (~1032:1), so a lying trailer costs
// at most one bounded allocation, and an honest one saves the regrowth copies.
size_t initial_size(std::span<const uint8_t> in, size_t max_bytes) {
  constexpr size_t kMaxDeflateRatio = 1032;
  size_t hint = 4096;
  if (in.size() >= 18) {
    const uint8_t* t = in.data() + in.size() - 4;
    hint = std::max<size_t>(hint, uint32_t(t[0]) | (uint32_t(t[1]) << 8) | (uint32_t(t[2]) << 16) |
                                      (uint32_t(t[3]) << 24));
  }
  const size_t ceiling =
      in.size() > max_bytes / kMaxDeflateRatio ? max_bytes : in.size() * kMaxDeflateRatio;
  return std::min({hint, ceiling, max_bytes});
}

}  // namespace

// Inflates member after member; output grows geometrically but never past max_bytes, so
// the allocation follows the data actually decoded, not the (untrusted) ISIZE trailer.
namespace {

// Inflates into at most `max_bytes`; with `stop_at_limit` it returns what fits there instead
// of failing, so a caller that knows the expected size decodes no further than that.
std::vector<uint8_t> inflate_bounded(std::span<const uint8_t> in, const std::string& name,
                                     size_t max_bytes, bool stop_at_limit) {
  Inflater inf;
  if (!inf.ok) {
    LOCKSTEP_THROW(DataError, name, ": zlib inflateInit failed (out of memory?)");
  }
  std::vector<uint8_t> out(initial_size(in, max_bytes));
  size_t produced = 0;
  size_t consumed = 0;
  z_stream& z = inf.z;
  for (;;) {
    if (produced == out.size()) {
      if (out.size() >= max_bytes && stop_at_limit) {
        break;
      }
      if (out.size() >= max_bytes) {
        LOCKSTEP_THROW(DataError, name, ": gzip data inflates to more than ", max_bytes,
                       " bytes (the limit); the file is not a dataset or is corrupt");
      }
      out.resize(std::min(max_bytes, out.size() * 2));
    }
    // zlib counts in uInt; feed at most 1 GiB per call.
    const size_t in_chunk = std::min<size_t>(in.size() - consumed, size_t{1} << 30);
    const size_t out_chunk = std::min<size_t>(out.size() - produced, size_t{1} << 30);
    z.next_in = const_cast<Bytef*>(in.data() + consumed);
    z.avail_in = static_cast<uInt>(in_chunk);
    z.next_out = out.data() + produced;
    z.avail_out = static_cast<uInt>(out_chunk);
    const int rc = inflate(&z, Z_NO_FLUSH);
    consumed += in_chunk - z.avail_in;
    produced += out_chunk - z.avail_out;
    if (rc == Z_STREAM_END) {
      // Another member may follow; anything else after the last member is garbage.
      if (consumed == in.size()) {
        break;
      }
      if (!is_gzip(in.subspan(consumed))) {
        LOCKSTEP_THROW(DataError, name, ": unexpected bytes after the gzip data at offset ",
                       consumed, "; the file is damaged, re-download it");
      }
      inflateReset(&z);
      continue;
    }
    if (rc == Z_OK) {
      continue;
    }
    if (rc == Z_BUF_ERROR && z.avail_out == 0) {
      continue;  // output full: grow and go on
    }
    if (rc == Z_BUF_ERROR) {
      LOCKSTEP_THROW(DataError, name, ": gzip data is truncated at offset ", consumed,
                     " (the stream ends before its end marker); the download was cut short, "
                     "re-download the file");
    }
    LOCKSTEP_THROW(DataError, name, ": corrupt gzip data near offset ", consumed,
                   " (zlib: ", z.msg ? z.msg : "error", "); re-download the file");
  }
  out.resize(produced);
  return out;
}

}  // namespace

std::vector<uint8_t> gunzip(std::span<const uint8_t> in, const std::string& name,
                            size_t max_bytes) {
  return inflate_bounded(in, name, max_bytes, false);
}

std::vector<uint8_t> gunzip_prefix(std::span<const uint8_t> in, const std::string& name,
                                   size_t max_bytes) {
  return inflate_bounded(in, name, max_bytes, true);
}

std::vector<uint8_t> read_data_file(const std::string& path, size_t max_bytes) {
  std::vector<uint8_t> raw = read_file(path, max_bytes);
  if (!is_gzip(raw)) {
    return raw;
  }
  return gunzip(raw, path, max_bytes);
}

}  // namespace lockstep::data
