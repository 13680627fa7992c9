// Socket helpers for the tcp transport: an owning file descriptor, address choice
// (LOCKSTEP_SOCKET_IFNAME, the route to MASTER_ADDR, else loopback), listen/connect/accept
// with deadlines, and whole-buffer blocking I/O for the handshake.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "lockstep/core/clock.h"

namespace lockstep::comm::tcp {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

// The IPv4 address to bind: LOCKSTEP_SOCKET_IFNAME's address, else the local end of the
// route to MASTER_ADDR, else 127.0.0.1.
std::string choose_bind_address();

// Listens on addr with a kernel-chosen port; returns the fd and the "ip:port" it got.
std::pair<Fd, std::string> listen_any_port(const std::string& addr, int backlog);
// Connects to "ip:port", retrying refused connections until the deadline.
Fd connect_to(const std::string& host_port, Deadline deadline);
// Accepts one connection before the deadline (TimeoutError otherwise).
Fd accept_one(int listen_fd, Deadline deadline);

// Blocking whole-buffer I/O with a deadline (for handshakes); throws on EOF/error/timeout.
void write_all(int fd, const void* data, size_t bytes, Deadline deadline, const std::string& what);
void read_all(int fd, void* data, size_t bytes, Deadline deadline, const std::string& what);

void set_nonblocking(int fd);
void set_nodelay(int fd);

}  // namespace lockstep::comm::tcp
