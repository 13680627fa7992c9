// Small socket helpers for the TcpStore: an owning file descriptor, a listening socket, one
// deadline-bounded connect attempt, and send/recv loops that survive EINTR, partial
// transfers and EAGAIN (waiting with poll until the deadline). Sockets are non-blocking.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "lockstep/core/clock.h"

namespace lockstep::store::net {

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

enum class Io { ok, timeout, closed };

// Waits until fd is readable (or dl), then reads once; *got >= 1 on Io::ok. For replies,
// which are a round trip away, this saves the read that would fail with EAGAIN.
Io recv_some(int fd, std::span<uint8_t> buf, const Deadline& dl, size_t* got);
// Sends every byte (MSG_NOSIGNAL: a dead peer is Io::closed, never SIGPIPE).
Io send_all(int fd, std::span<const uint8_t> data, const Deadline& dl);
// Receives exactly data.size() bytes; Io::closed on EOF or connection reset.
Io recv_exact(int fd, std::span<uint8_t> data, const Deadline& dl);

// A non-blocking listening socket bound to host:port (port 0 = ephemeral).
Fd listen_tcp(const std::string& host, uint16_t port, int backlog);
uint16_t bound_port(int fd);
// "ip:port" of the remote end, for log lines; "?" if unknown.
std::string peer_name(int fd);

// One connect attempt bounded by dl. Returns a connected non-blocking socket with
// TCP_NODELAY, or an empty Fd with *err set when the attempt failed in a way worth retrying
// (refused, unreachable, timed out). Throws ConfigError when host cannot be resolved.
Fd connect_once(const std::string& host, uint16_t port, const Deadline& dl, int* err);

void set_nonblocking(int fd);
void set_nodelay(int fd);

}  // namespace lockstep::store::net
