#include "lockstep/comm/tcp/tcp_transport.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"

namespace lockstep::comm::tcp {
namespace {

constexpr uint32_t kMagic = 0x4c4b5354;  // "LKST"
struct Hello {
  uint32_t magic;
  uint32_t rank;
};
constexpr size_t kHeader = sizeof(Request::header);

}  // namespace

TcpTransport::TcpTransport(store::Store& store, const std::string& prefix, int rank, int size,
                           Millis timeout, FailureBoard on_failure)
    : rank_(rank), size_(size), peers_(size), reqs_(size), on_failure_(std::move(on_failure)) {
  abort_fd_ = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  LOCKSTEP_CHECK_ERRNO(abort_fd_.get(), "eventfd");
  connect_mesh(store, prefix, Deadline::after(timeout));
}

TcpTransport::~TcpTransport() = default;

// Rendezvous: every rank listens and publishes "ip:port"; rank r connects to each lower rank
// (identifying itself with a hello) and accepts one connection from each higher rank.
void TcpTransport::connect_mesh(store::Store& store, const std::string& prefix, Deadline deadline) {
  auto [listener, addr] = listen_any_port(choose_bind_address(), size_);
  store.set(str_cat(prefix, "tcp/addr/", rank_), addr);
  for (int peer = 0; peer < rank_; ++peer) {
    auto ms = std::chrono::duration_cast<Millis>(deadline.remaining());
    std::string peer_addr = store::to_string(store.get(str_cat(prefix, "tcp/addr/", peer), ms));
    Fd s = connect_to(peer_addr, deadline);
    Hello h{kMagic, uint32_t(rank_)};
    write_all(s.get(), &h, sizeof h, deadline, str_cat("hello to rank ", peer));
    peers_[peer] = std::move(s);
  }
  for (int n = rank_ + 1; n < size_; ++n) {
    Fd s = accept_one(listener.get(), deadline);
    Hello h{};
    read_all(s.get(), &h, sizeof h, deadline, "hello from a peer");
    if (h.magic != kMagic || int(h.rank) <= rank_ || int(h.rank) >= size_ || peers_[h.rank].valid())
      LOCKSTEP_THROW(ProtocolError, "rank ", rank_, ": bad hello (magic ", h.magic, ", rank ",
                     h.rank, ") on ", addr, "; is another job using the same store prefix?");
    peers_[h.rank] = std::move(s);
  }
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    set_nonblocking(peers_[p].get());
    set_nodelay(peers_[p].get());
  }
}

RequestId TcpTransport::post_send(int peer, uint64_t tag, const void* data, size_t bytes) {
  return reqs_.add(peer, true, tag, data, bytes);
}

RequestId TcpTransport::post_recv(int peer, uint64_t tag, void* data, size_t bytes) {
  return reqs_.add(peer, false, tag, data, bytes);
}

void TcpTransport::abort() {
  aborted_.store(true);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(abort_fd_.get(), &one, sizeof one);
}

void TcpTransport::check_usable(const OpInfo& info) const {
  if (aborted_.load()) LOCKSTEP_THROW(AbortedError, info.describe(), ": process group aborted");
  if (!broken_.empty())
    LOCKSTEP_THROW(PeerError, info.describe(), ": transport unusable after an earlier error: ",
                   broken_, "; recreate the process group");
}

void TcpTransport::break_all() {
  for (int p = 0; p < size_; ++p)
    if (p != rank_ && peers_[p].valid()) ::shutdown(peers_[p].get(), SHUT_RDWR);
}

// Failures cascade (a rank that fails closes its sockets, so its neighbours fail next): the
// group's first failure is recorded before closing and quoted by everyone after it.
std::string TcpTransport::with_first_failure(const std::string& msg) {
  if (!on_failure_) return msg;
  std::string first;
  try {
    first = on_failure_(msg);
  } catch (const std::exception&) {
    return msg;  // the store is gone too: report what we saw
  }
  return first == msg || first.empty() ? msg : str_cat(msg, "; first failure in the group: ", first);
}

void TcpTransport::fail_peer(int peer, int err, const char* what, const OpInfo& info) {
  std::string msg = str_cat(info.describe(), ": peer rank ", peer, " ", what,
                            err ? str_cat(" (", std::strerror(err), ")") : std::string(),
                            "; the peer process probably died or was killed");
  msg = with_first_failure(msg);
  broken_ = msg;
  break_all();
  throw PeerError(peer, std::string(op_kind_name(info.kind)), msg);
}

void TcpTransport::fail_timeout(const OpInfo& info) {
  std::string who;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    if (reqs_.has_pending(p, false)) who += str_cat(" recv from rank ", p, ";");
    if (reqs_.has_pending(p, true)) who += str_cat(" send to rank ", p, ";");
  }
  std::string msg = str_cat(info.describe(), ": timed out; still pending:", who,
                            " that peer is stalled, stopped or calling another collective");
  msg = with_first_failure(msg);
  broken_ = msg;
  break_all();
  throw TimeoutError(msg);
}

bool TcpTransport::progress_send(int peer, const OpInfo& info) {
  bool moved = false;
  while (Request* r = reqs_.front(peer, true)) {
    iovec iov[2];
    int n = 0;
    if (r->done < kHeader) {
      iov[n++] = {reinterpret_cast<uint8_t*>(r->header) + r->done, kHeader - r->done};
      iov[n++] = {r->buf, r->bytes};
    } else {
      iov[n++] = {r->buf + (r->done - kHeader), r->bytes - (r->done - kHeader)};
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = size_t(n);
    ssize_t k = ::sendmsg(peers_[peer].get(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return moved;
      fail_peer(peer, errno, "reset the connection while we sent", info);
    }
    moved = true;
    r->done += size_t(k);
    if (r->done == kHeader + r->bytes) reqs_.finish_front(peer, true);
  }
  return moved;
}

bool TcpTransport::progress_recv(int peer, const OpInfo& info) {
  bool moved = false;
  while (Request* r = reqs_.front(peer, false)) {
    iovec iov[2];
    int n = 0;
    if (r->done < kHeader) {
      iov[n++] = {reinterpret_cast<uint8_t*>(r->header) + r->done, kHeader - r->done};
      iov[n++] = {r->buf, r->bytes};
    } else {
      iov[n++] = {r->buf + (r->done - kHeader), r->bytes - (r->done - kHeader)};
    }
    ssize_t k = ::readv(peers_[peer].get(), iov, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return moved;
      fail_peer(peer, errno, "reset the connection while we received", info);
    }
    if (k == 0) fail_peer(peer, 0, "closed the connection", info);
    bool had_header = r->done >= kHeader;
    moved = true;
    r->done += size_t(k);
    if (!had_header && r->done >= kHeader && (r->header[0] != r->tag || r->header[1] != r->bytes)) {
      broken_ = str_cat(info.describe(), ": message mismatch from rank ", peer, ": expected tag ",
                        r->tag, " with ", r->bytes, " bytes, got tag ", r->header[0], " with ",
                        r->header[1], " bytes; ranks are calling different collectives or counts "
                        "(LOCKSTEP_DEBUG=detail names the first mismatch)");
      break_all();
      throw ProtocolError(broken_);
    }
    if (r->done == kHeader + r->bytes) reqs_.finish_front(peer, false);
  }
  return moved;
}

// One round: try every pending socket without blocking; if nothing moved, poll until some
// socket is ready, the abort eventfd fires or the deadline passes.
void TcpTransport::poll_once(Deadline deadline, const OpInfo& info) {
  bool moved = false;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    if (reqs_.has_pending(p, true)) moved |= progress_send(p, info);
    if (reqs_.has_pending(p, false)) moved |= progress_recv(p, info);
  }
  if (moved) return;
  std::vector<pollfd> fds;
  fds.push_back({abort_fd_.get(), POLLIN, 0});
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    short ev = short((reqs_.has_pending(p, true) ? POLLOUT : 0) |
                     (reqs_.has_pending(p, false) ? POLLIN : 0));
    if (ev) fds.push_back({peers_[p].get(), ev, 0});
  }
  int rc = ::poll(fds.data(), fds.size(), deadline.poll_timeout_ms());
  if (rc < 0 && errno == EINTR) return;
  LOCKSTEP_CHECK_ERRNO(rc, "poll");
  if (rc == 0) fail_timeout(info);
  check_usable(info);
}

template <class Done>
void TcpTransport::progress_until(Done done, Deadline deadline, const OpInfo& info) {
  check_usable(info);
  while (!done()) poll_once(deadline, info);
}

void TcpTransport::wait(RequestId id, Deadline deadline, const OpInfo& info) {
  progress_until([&] { return reqs_.is_complete(id); }, deadline, info);
}

void TcpTransport::wait_all(Deadline deadline, const OpInfo& info) {
  progress_until([&] { return reqs_.pending() == 0; }, deadline, info);
}

}  // namespace lockstep::comm::tcp
