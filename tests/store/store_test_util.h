// Helpers shared by the store tests: a temporary directory, raw loopback sockets for
// hand-made messages, and forked children that are always reaped by pid.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "lockstep/core/error.h"
#include "lockstep/store/net.h"
#include "lockstep/store/wire.h"

namespace lockstep::store::testing {

using namespace std::chrono_literals;

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lockstep-store-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A blocking raw TCP connection to 127.0.0.1:port (connect errors throw).
inline net::Fd raw_connect(uint16_t port) {
  int err = 0;
  auto fd = net::connect_once("127.0.0.1", port, Deadline::after(5s), &err);
  if (!fd) throw std::runtime_error("raw connect failed: " + std::to_string(err));
  return fd;
}

inline void raw_send(int fd, const Bytes& b) {
  if (net::send_all(fd, b, Deadline::after(5s)) != net::Io::ok) {
    throw std::runtime_error("raw send failed");
  }
}

// True when the server closes the connection within `within` (reads and discards replies).
inline bool closed_by_peer(int fd, Millis within) {
  auto dl = Deadline::after(within);
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
    if (dl.expired()) return false;
    std::this_thread::sleep_for(5ms);
  }
}

// Reads one reply frame (blocking up to 10 s) and returns it parsed into status + payload.
inline std::pair<wire::Status, Bytes> raw_reply(int fd) {
  uint8_t hdr[wire::kFrameHeaderBytes];
  auto dl = Deadline::after(10s);
  if (net::recv_exact(fd, hdr, dl) != net::Io::ok) throw std::runtime_error("no reply header");
  Bytes body(wire::frame_body_length(hdr));
  if (net::recv_exact(fd, body, dl) != net::Io::ok) throw std::runtime_error("no reply body");
  auto r = wire::parse_response(body);
  return {r.status, Bytes(r.payload.begin(), r.payload.end())};
}

// Forks a child that runs body() and _exits with its result (1 on exception). The child
// has an alarm so that it cannot outlive a broken test; the parent reaps it by pid.
class Child {
 public:
  explicit Child(const std::function<int()>& body, unsigned alarm_s = 30) {
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::alarm(alarm_s);
      int rc = 1;
      try {
        rc = body();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", int(::getpid()), e.what());
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
  }
  ~Child() { kill(SIGKILL); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  // Exit code, or -1 on timeout (still running), or 128+signal when killed.
  int wait(Millis timeout) {
    if (reaped_) return status_;
    auto dl = Deadline::after(timeout);
    for (;;) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return status_;
      }
      if (dl.expired()) return -1;
      std::this_thread::sleep_for(2ms);
    }
  }
  void kill(int sig) {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, sig);
      if (sig == SIGKILL) wait(10s);
    }
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = -1;
};

}  // namespace lockstep::store::testing
