#include "lockstep/launch/output.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

namespace lockstep::launch {
namespace {

constexpr size_t kMaxPartial = 64 * 1024;  // a line longer than this is written in pieces

void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // our own stdout is gone; nothing sensible to do
    off += size_t(n);
  }
}

}  // namespace

bool LinePrefixer::pump(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return true;
  char buf[65536];
  ssize_t n = ::read(fd, buf, sizeof buf);
  if (n < 0) return errno == EINTR || errno == EAGAIN;
  if (n == 0) {
    flush();
    return false;
  }
  emit(buf, size_t(n));
  return true;
}

void LinePrefixer::add_line(std::string& out, std::string_view line) {
  if (rewrite_) {
    out += rewrite_(line);
  } else {
    out += prefix_;
    out += line;
  }
  out += '\n';
}

void LinePrefixer::emit(const char* data, size_t n) {
  std::string out;
  size_t start = 0;
  for (size_t i = 0; i < n; ++i) {
    if (data[i] != '\n') continue;
    partial_.append(data + start, i - start);
    add_line(out, partial_);
    partial_.clear();
    start = i + 1;
  }
  partial_.append(data + start, n - start);
  if (partial_.size() > kMaxPartial) {
    add_line(out, partial_);
    partial_.clear();
  }
  if (!out.empty()) write_all(target_, out);
}

void LinePrefixer::flush() {
  if (partial_.empty()) return;
  std::string out;
  add_line(out, partial_);
  write_all(target_, out);
  partial_.clear();
}

}  // namespace lockstep::launch
