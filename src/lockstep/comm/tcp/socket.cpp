#include "lockstep/comm/tcp/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "lockstep/core/error.h"

namespace lockstep::comm::tcp {
namespace {

sockaddr_in parse_addr(const std::string& host, int port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(port));
  if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) == 1) return sa;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || !res)
    LOCKSTEP_THROW(ConfigError, "cannot resolve host '", host, "': ", gai_strerror(rc));
  sa.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  freeaddrinfo(res);
  return sa;
}

std::string addr_to_string(const sockaddr_in& sa) {
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &sa.sin_addr, buf, sizeof buf);
  return str_cat(buf, ":", ntohs(sa.sin_port));
}

std::string ifname_address(const std::string& ifname) {
  ifaddrs* list = nullptr;
  LOCKSTEP_CHECK_ERRNO(getifaddrs(&list), "getifaddrs");
  std::string found;
  for (ifaddrs* p = list; p; p = p->ifa_next) {
    if (p->ifa_addr && p->ifa_addr->sa_family == AF_INET && ifname == p->ifa_name) {
      char buf[INET_ADDRSTRLEN] = {};
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(p->ifa_addr)->sin_addr, buf, sizeof buf);
      found = buf;
      break;
    }
  }
  freeifaddrs(list);
  if (found.empty())
    LOCKSTEP_THROW(ConfigError, "LOCKSTEP_SOCKET_IFNAME=", ifname,
                   ": no such interface with an IPv4 address (see `ip -4 addr`)");
  return found;
}

// The local address the kernel would use to reach `host` (a UDP connect sends nothing).
std::string route_address(const std::string& host) {
  Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  LOCKSTEP_CHECK_ERRNO(s.get(), "socket");
  sockaddr_in sa = parse_addr(host, 9);
  LOCKSTEP_CHECK_ERRNO(::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa),
                       "no route to MASTER_ADDR=", host);
  sockaddr_in local{};
  socklen_t len = sizeof local;
  LOCKSTEP_CHECK_ERRNO(getsockname(s.get(), reinterpret_cast<sockaddr*>(&local), &len), "getsockname");
  local.sin_port = 0;
  std::string a = addr_to_string(local);
  return a.substr(0, a.rfind(':'));
}

}  // namespace

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string choose_bind_address() {
  if (const char* ifn = std::getenv("LOCKSTEP_SOCKET_IFNAME"); ifn && *ifn) return ifname_address(ifn);
  if (const char* m = std::getenv("MASTER_ADDR"); m && *m) {
    std::string host = m;
    if (host != "localhost" && host.rfind("127.", 0) != 0) return route_address(host);
  }
  return "127.0.0.1";
}

std::pair<Fd, std::string> listen_any_port(const std::string& addr, int backlog) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  LOCKSTEP_CHECK_ERRNO(s.get(), "socket");
  sockaddr_in sa = parse_addr(addr, 0);
  LOCKSTEP_CHECK_ERRNO(::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), "bind ", addr);
  LOCKSTEP_CHECK_ERRNO(::listen(s.get(), backlog), "listen ", addr);
  socklen_t len = sizeof sa;
  LOCKSTEP_CHECK_ERRNO(getsockname(s.get(), reinterpret_cast<sockaddr*>(&sa), &len), "getsockname");
  return {std::move(s), addr_to_string(sa)};
}

Fd connect_to(const std::string& host_port, Deadline deadline) {
  auto colon = host_port.rfind(':');
  LOCKSTEP_CHECK(colon != std::string::npos, "bad address '", host_port, "'");
  sockaddr_in sa = parse_addr(host_port.substr(0, colon), std::stoi(host_port.substr(colon + 1)));
  for (;;) {
    Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    LOCKSTEP_CHECK_ERRNO(s.get(), "socket");
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) return s;
    int err = errno;
    if (err != ECONNREFUSED && err != EINTR && err != ETIMEDOUT && err != EAGAIN)
      throw SystemError(err, str_cat("connect to ", host_port, ": ", std::strerror(err)));
    if (deadline.expired())
      LOCKSTEP_THROW(TimeoutError, "connect to ", host_port, " timed out (", std::strerror(err), ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Fd accept_one(int listen_fd, Deadline deadline) {
  for (;;) {
    pollfd p{listen_fd, POLLIN, 0};
    int rc = ::poll(&p, 1, deadline.poll_timeout_ms());
    if (rc < 0 && errno == EINTR) continue;
    LOCKSTEP_CHECK_ERRNO(rc, "poll on listening socket");
    if (rc == 0) LOCKSTEP_THROW(TimeoutError, "timed out waiting for peers to connect");
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0 && (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)) continue;
    LOCKSTEP_CHECK_ERRNO(fd, "accept");
    return Fd(fd);
  }
}

static void wait_fd(int fd, short events, Deadline deadline, const std::string& what) {
  pollfd p{fd, events, 0};
  int rc;
  do rc = ::poll(&p, 1, deadline.poll_timeout_ms());
  while (rc < 0 && errno == EINTR);
  LOCKSTEP_CHECK_ERRNO(rc, "poll (", what, ")");
  if (rc == 0) LOCKSTEP_THROW(TimeoutError, what, ": timed out");
}

void write_all(int fd, const void* data, size_t bytes, Deadline deadline, const std::string& what) {
  auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    wait_fd(fd, POLLOUT, deadline, what);
    ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) throw SystemError(errno, str_cat(what, ": ", std::strerror(errno)));
    p += n;
    bytes -= size_t(n);
  }
}

void read_all(int fd, void* data, size_t bytes, Deadline deadline, const std::string& what) {
  auto* p = static_cast<char*>(data);
  while (bytes > 0) {
    wait_fd(fd, POLLIN, deadline, what);
    ssize_t n = ::recv(fd, p, bytes, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) throw SystemError(errno, str_cat(what, ": ", std::strerror(errno)));
    if (n == 0) LOCKSTEP_THROW(PeerError, what, ": connection closed by peer");
    p += n;
    bytes -= size_t(n);
  }
}

void set_nonblocking(int fd) {
  int fl = LOCKSTEP_CHECK_ERRNO(::fcntl(fd, F_GETFL), "fcntl");
  LOCKSTEP_CHECK_ERRNO(::fcntl(fd, F_SETFL, fl | O_NONBLOCK), "fcntl O_NONBLOCK");
}

void set_nodelay(int fd) {
  int one = 1;
  LOCKSTEP_CHECK_ERRNO(::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), "TCP_NODELAY");
}

}  // namespace lockstep::comm::tcp
