#include "lockstep/store/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "lockstep/core/error.h"

namespace lockstep::store::net {
namespace {

// Waits for `events` on fd until dl; false on timeout. EINTR just polls again.
bool wait_fd(int fd, short events, const Deadline& dl) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, dl.poll_timeout_ms());
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) LOCKSTEP_CHECK_ERRNO(r, "poll on store socket");
  }
}

struct AddrInfoDeleter {
  void operator()(addrinfo* a) const { ::freeaddrinfo(a); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

AddrInfoPtr resolve(const std::string& host, uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    LOCKSTEP_THROW(ConfigError, "cannot resolve store address '", host, ":", port,
                   "': ", ::gai_strerror(rc), " (check MASTER_ADDR / the store host)");
  }
  return AddrInfoPtr(res);
}

}  // namespace

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);  // close errors on a socket are not actionable
  fd_ = fd;
}

Io send_all(int fd, std::span<const uint8_t> data, const Deadline& dl) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += size_t(n);
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd, POLLOUT, dl)) return Io::timeout;
    } else if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
      return Io::closed;
    } else {
      LOCKSTEP_CHECK_ERRNO(-1, "send on store socket");
    }
  }
  return Io::ok;
}

Io recv_exact(int fd, std::span<uint8_t> data, const Deadline& dl) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::recv(fd, data.data() + off, data.size() - off, 0);
    if (n > 0) {
      off += size_t(n);
    } else if (n == 0) {
      return Io::closed;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd, POLLIN, dl)) return Io::timeout;
    } else if (errno == ECONNRESET || errno == ENOTCONN) {
      return Io::closed;
    } else {
      LOCKSTEP_CHECK_ERRNO(-1, "recv on store socket");
    }
  }
  return Io::ok;
}

Io recv_some(int fd, std::span<uint8_t> buf, const Deadline& dl, size_t* got) {
  for (;;) {
    if (!wait_fd(fd, POLLIN, dl)) return Io::timeout;
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n > 0) {
      *got = size_t(n);
      return Io::ok;
    }
    if (n == 0 || errno == ECONNRESET || errno == ENOTCONN) return Io::closed;
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      LOCKSTEP_CHECK_ERRNO(-1, "recv on store socket");
    }
  }
}

void set_nonblocking(int fd) {
  int flags = LOCKSTEP_CHECK_ERRNO(::fcntl(fd, F_GETFL), "fcntl(F_GETFL) on store socket");
  LOCKSTEP_CHECK_ERRNO(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl(O_NONBLOCK)");
}

void set_nodelay(int fd) {
  // Store messages are small request/response pairs: Nagle would add 40 ms per round trip.
  int one = 1;
  LOCKSTEP_CHECK_ERRNO(::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one),
                       "setsockopt(TCP_NODELAY)");
}

Fd listen_tcp(const std::string& host, uint16_t port, int backlog) {
  auto ai = resolve(host, port, true);
  Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 ai->ai_protocol));
  LOCKSTEP_CHECK_ERRNO(fd.get(), "socket() for the store server");
  // A restarted server must not fail on the previous run's TIME_WAIT connections.
  int one = 1;
  LOCKSTEP_CHECK_ERRNO(::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one),
                       "setsockopt(SO_REUSEADDR)");
  if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
    int err = errno;
    throw SystemError(err, str_cat("store server cannot bind ", host, ":", port, ": ",
                                   std::strerror(err),
                                   err == EADDRINUSE ? " (another store or program holds this "
                                                       "port; pick another or use port 0)"
                                                     : ""));
  }
  LOCKSTEP_CHECK_ERRNO(::listen(fd.get(), backlog), "listen on ", host, ":", port);
  return fd;
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  LOCKSTEP_CHECK_ERRNO(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len),
                       "getsockname on store socket");
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  return str_cat(host, ":", serv);
}

Fd connect_once(const std::string& host, uint16_t port, const Deadline& dl, int* err) {
  auto ai = resolve(host, port, false);
  Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 ai->ai_protocol));
  LOCKSTEP_CHECK_ERRNO(fd.get(), "socket() for the store client");
  int rc;
  do {
    rc = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EINPROGRESS) {
    *err = errno;
    return Fd();
  }
  if (rc != 0) {
    if (!wait_fd(fd.get(), POLLOUT, dl)) {
      *err = ETIMEDOUT;
      return Fd();
    }
    int so_err = 0;
    socklen_t len = sizeof so_err;
    LOCKSTEP_CHECK_ERRNO(::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_err, &len),
                         "getsockopt(SO_ERROR)");
    if (so_err != 0) {
      *err = so_err;
      return Fd();
    }
  }
  set_nodelay(fd.get());
  return fd;
}

}  // namespace lockstep::store::net
