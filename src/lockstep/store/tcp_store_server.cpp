#include "lockstep/store/tcp_store_server.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <queue>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"
#include "lockstep/store/hash_store.h"
#include "lockstep/store/net.h"
#include "lockstep/store/wire.h"

namespace lockstep::store {

bool constant_time_equal(std::string_view expected, std::string_view given) {
  // Walk the full expected token whatever `given` holds, so timing reveals no prefix.
  volatile uint8_t diff = expected.size() == given.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    uint8_t g = i < given.size() ? uint8_t(given[i]) : 0;
    diff = diff | (uint8_t(expected[i]) ^ g);
  }
  return diff == 0;
}

namespace {

constexpr int kMaxEvents = 256;
constexpr size_t kReadChunk = 64 * 1024;
constexpr int kMaxReadsPerEvent = 16;          // fairness between busy connections
constexpr size_t kOutHighWater = 4u << 20;     // stop reading requests while replies back up
constexpr size_t kInCap = wire::kFrameHeaderBytes + wire::kMaxMessageBytes;
constexpr auto kSweepEvery = std::chrono::milliseconds(250);
constexpr auto kAcceptPause = std::chrono::milliseconds(100);
constexpr int kWarningsPerWindow = 10;
constexpr auto kWarningWindow = std::chrono::seconds(10);

struct Conn {
  net::Fd fd;
  uint64_t id = 0;   // unique, in accept order (descriptors are reused)
  std::string peer;  // address:port
  std::string addr;  // address
  Clock::time_point opened;
  Bytes in, out;
  size_t in_off = 0, out_off = 0;
  bool authed = false;
  bool closing = false;  // flush the pending reply, then close (refused hello)
  bool dead = false;     // closed at the end of this loop iteration
  uint32_t events = 0;   // current epoll interest
  // A parked get/wait: registered under wait_key (its first missing key) and in the timers.
  bool blocked = false;
  wire::Request waiting;
  uint64_t wait_seq = 0;
  std::string wait_key;
};

using Timer = std::tuple<Clock::time_point, int, uint64_t>;  // deadline, fd, wait_seq

std::string token_from(const std::optional<std::string>& t) {
  if (t) return *t;
  const char* env = std::getenv("LOCKSTEP_STORE_TOKEN");
  return env ? std::string(env) : std::string();
}

}  // namespace

struct TcpStoreServer::Impl {
  TcpStoreServerOptions opts;
  std::string token;
  net::Fd listen, ep, wake;
  std::thread thread;
  std::atomic<bool> stop_requested{false}, running{false};
  std::atomic<int64_t> n_conns{0}, n_waiters{0}, n_dropped{0};

  std::unordered_map<int, std::unique_ptr<Conn>> conns;
  std::unordered_map<std::string, Bytes> data;
  std::unordered_map<std::string, std::vector<std::pair<int, uint64_t>>> waiters;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers;
  std::vector<int> runnable, dead;
  Bytes scratch = Bytes(kReadChunk);
  uint64_t next_seq = 0;
  Clock::time_point last_sweep{}, accept_resume{};
  bool accept_paused = false;
  ConnectionLimits limits;
  PendingConnections pending;
  uint64_t next_conn_id = 0;
  WarnLimiter warnings{kWarningsPerWindow, kWarningWindow};

  explicit Impl(TcpStoreServerOptions o) : opts(std::move(o)), token(token_from(opts.token)) {
    limits = resolve_limits(opts.limits, open_files_limit());
    listen = net::listen_tcp(opts.host, opts.port, opts.backlog);
    opts.port = net::bound_port(listen.get());
    ep = net::Fd(LOCKSTEP_CHECK_ERRNO(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1"));
    wake = net::Fd(LOCKSTEP_CHECK_ERRNO(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd"));
    add_fd(listen.get(), EPOLLIN);
    add_fd(wake.get(), EPOLLIN);
    if (token.empty() && opts.host != "127.0.0.1" && opts.host != "localhost") {
      LOCKSTEP_LOG(warn, "store server on ", where(), " accepts clients without a token; set "
                   "LOCKSTEP_STORE_TOKEN to keep other users of the network out");
    }
  }

  std::string where() const { return str_cat(opts.host, ":", opts.port); }

  // Warnings about clients go through the limiter: a flood costs a few lines, not one each.
  void warn(const std::string& what) {
    if (warnings.allow(Clock::now())) LOCKSTEP_LOG(warn, "store server on ", where(), ": ", what);
  }

  void add_fd(int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    LOCKSTEP_CHECK_ERRNO(::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev), "epoll_ctl(ADD)");
  }
  void mod_fd(int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    LOCKSTEP_CHECK_ERRNO(::epoll_ctl(ep.get(), EPOLL_CTL_MOD, fd, &ev), "epoll_ctl(MOD)");
  }

  // ---- the loop -------------------------------------------------------------------------

  void run() {
    LOCKSTEP_CHECK(!running.exchange(true), "TcpStoreServer on ", where(), " is already running");
    LOCKSTEP_LOG(debug, "store server listening on ", where());
    try {
      epoll_event evs[kMaxEvents];
      while (!stop_requested.load()) {
        int n = ::epoll_wait(ep.get(), evs, kMaxEvents, next_timeout_ms());
        if (n < 0 && errno == EINTR) continue;
        LOCKSTEP_CHECK_ERRNO(n, "epoll_wait in the store server on ", where());
        for (int i = 0; i < n; ++i) dispatch(evs[i]);
        auto now = Clock::now();
        expire_timers(now);
        drain_runnable();
        sweep(now);
        reap_dead();
      }
    } catch (...) {
      close_all();  // clients must see the failure as a closed store, not a hang
      throw;
    }
    close_all();
  }

  int next_timeout_ms() const {
    auto until = Clock::now() + kSweepEvery;
    if (!timers.empty()) until = std::min(until, std::get<0>(timers.top()));
    return Deadline(until).poll_timeout_ms();
  }

  void close_all() {
    pending = {};
    conns.clear();
    waiters.clear();
    timers = {};
    n_conns = 0;
    n_waiters = 0;
  }

  void dispatch(const epoll_event& ev) {
    int fd = ev.data.fd;
    if (fd == wake.get()) {
      uint64_t v;
      while (::read(wake.get(), &v, sizeof v) > 0) {
      }
      return;
    }
    if (fd == listen.get()) return accept_all();
    auto it = conns.find(fd);
    if (it == conns.end() || it->second->dead) return;
    Conn& c = *it->second;
    try {
      if (ev.events & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_input(c);
      if (!c.dead && (ev.events & (EPOLLERR | EPOLLHUP))) drop(c, "");
      if (!c.dead && (ev.events & EPOLLRDHUP) && c.blocked) drop(c, "");  // waiter went away
      if (!c.dead && (ev.events & EPOLLOUT)) flush(c);
      if (!c.dead) process_input(c);
    } catch (const std::exception& e) {
      // A bad message costs only its own connection; the server and other clients go on.
      n_dropped++;
      drop(c, e.what());
    }
    update_interest(c);
  }

  // At max_connections the oldest pending connection is closed first (accepting goes on once
  // it is reaped); when all are authenticated the newcomer is refused. max_connections leaves
  // descriptors spare, so accept() itself does not fail for lack of one.
  void accept_all() {
    for (int i = 0; i < 256; ++i) {
      const bool full = conns.size() >= limits.max_connections;
      if (full && (!dead.empty() || evict_oldest(nullptr, "the server is at its connection limit")))
        return;
      int fd = ::accept4(listen.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        // Out of descriptors: level-triggered epoll would spin, so pause accepting briefly.
        warn(str_cat("cannot accept: ", std::strerror(errno),
                     " (raise the open-files limit, ulimit -n)"));
        mod_fd(listen.get(), 0);
        accept_paused = true;
        accept_resume = Clock::now() + kAcceptPause;
        return;
      }
      if (full) {
        refuse(fd);
        continue;
      }
      admit(fd);
    }
  }

  void admit(int fd) {
    auto c = std::make_unique<Conn>();
    c->fd = net::Fd(fd);
    net::set_nodelay(fd);
    c->id = ++next_conn_id;
    c->peer = net::peer_name(fd);
    c->addr = peer_address(c->peer);
    c->opened = Clock::now();
    c->events = EPOLLIN;
    if (pending.count(c->addr) >= limits.max_pending_per_peer) {
      evict_oldest(&c->addr, str_cat("more than ", limits.max_pending_per_peer,
                                     " connections without a hello from ", c->addr));
    } else if (pending.size() >= limits.max_pending) {
      evict_oldest(nullptr,
                   str_cat("more than ", limits.max_pending, " connections without a hello"));
    }
    add_fd(fd, c->events);
    pending.add(c->id, fd, c->addr);
    conns.emplace(fd, std::move(c));
    n_conns++;
  }

  bool evict_oldest(const std::string* addr, const std::string& why) {
    const auto victim = pending.oldest(addr);
    if (!victim) return false;
    n_dropped++;
    drop(*conns.at(victim->fd), str_cat(why, " (closing the oldest)"));
    return true;
  }

  void refuse(int fd) {
    n_dropped++;
    warn(str_cat("refusing a connection from ", net::peer_name(fd), ": all ",
                 limits.max_connections, " connections are held by authenticated clients"));
    ::close(fd);
  }

  // ---- per-connection I/O ---------------------------------------------------------------

  void read_input(Conn& c) {
    for (int i = 0; i < kMaxReadsPerEvent; ++i) {
      size_t pending = c.in.size() - c.in_off;
      if (pending >= kInCap) return;  // unreachable: frames are validated before they fill it
      // Read into the loop's one scratch buffer, so an idle connection holds no big buffer
      // (thousands of parked waiters must cost little memory).
      size_t want = std::min(kReadChunk, kInCap - pending);
      ssize_t n = ::recv(c.fd.get(), scratch.data(), want, 0);
      if (n > 0) {
        c.in.insert(c.in.end(), scratch.begin(), scratch.begin() + n);
        // Reject an oversized length as soon as its header arrives, not after 128 MiB.
        wire::complete_frame_size(std::span<const uint8_t>(c.in).subspan(c.in_off),
                                  max_body(c));
        // A short read drained the socket; level-triggered epoll reports anything later,
        // so skip the read that would only say EAGAIN.
        if (size_t(n) < want) return;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      return drop(c, "");  // EOF or reset: the client went away
    }
  }

  static size_t max_body(const Conn& c) {
    return c.authed ? wire::kMaxMessageBytes : wire::kMaxHelloBytes;
  }

  void flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off,
                         MSG_NOSIGNAL);
      if (n > 0) {
        c.out_off += size_t(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
      } else {
        return drop(c, "");  // the client closed before reading its reply
      }
    }
    c.out.clear();
    c.out_off = 0;
    if (c.out.capacity() > kReadChunk) c.out.shrink_to_fit();
    if (c.closing) drop(c, "");
  }

  void update_interest(Conn& c) {
    if (c.dead) return;
    uint32_t ev = 0;
    size_t out_pending = c.out.size() - c.out_off;
    if (!c.closing && !c.blocked && out_pending < kOutHighWater) ev |= EPOLLIN;
    if (out_pending > 0) ev |= EPOLLOUT;
    if (c.blocked) ev |= EPOLLRDHUP;  // notice a parked waiter's client dying
    if (ev != c.events) {
      mod_fd(c.fd.get(), ev);
      c.events = ev;
    }
  }

  void drop(Conn& c, const std::string& why) {
    if (c.dead) return;
    if (!why.empty()) warn(str_cat("dropping connection from ", c.peer, ": ", why));
    if (!c.authed) pending.remove(c.id);
    if (c.blocked) unpark(c);
    c.dead = true;
    dead.push_back(c.fd.get());
  }

  void reap_dead() {
    for (int fd : dead) {
      if (conns.erase(fd)) n_conns--;
    }
    dead.clear();
  }

  void reply(Conn& c, wire::Status st, std::span<const uint8_t> payload = {}) {
    wire::encode_response(c.out, st, payload);
  }

  // ---- requests -------------------------------------------------------------------------

  void process_input(Conn& c) {
    while (!c.dead && !c.blocked && !c.closing && c.out.size() - c.out_off < kOutHighWater) {
      auto avail = std::span<const uint8_t>(c.in).subspan(c.in_off);
      auto size = wire::complete_frame_size(avail, max_body(c));
      if (!size) break;
      auto body = avail.subspan(wire::kFrameHeaderBytes, *size - wire::kFrameHeaderBytes);
      if (c.authed) {
        handle_request(c, wire::parse_request(body));
      } else {
        handle_hello(c, body);
      }
      c.in_off += *size;
    }
    if (c.in_off == c.in.size()) {
      c.in.clear();
      c.in_off = 0;
      if (c.in.capacity() > kReadChunk) c.in.shrink_to_fit();
    } else if (c.in_off > kReadChunk) {
      c.in.erase(c.in.begin(), c.in.begin() + ptrdiff_t(c.in_off));
      c.in_off = 0;
    }
    if (!c.dead) flush(c);
  }

  void handle_hello(Conn& c, std::span<const uint8_t> body) {
    auto h = wire::parse_hello(body);
    std::string why;
    if (h.version != wire::kVersion) {
      why = str_cat("unsupported store protocol version ", h.version, " (this server speaks ",
                    wire::kVersion, "; run the same lockstep build on every worker)");
    } else if (!constant_time_equal(token, h.token)) {
      why = "wrong store token (give every worker the launcher's LOCKSTEP_STORE_TOKEN)";
    }
    if (why.empty()) {
      c.authed = true;
      pending.remove(c.id);
      return reply(c, wire::Status::ok);
    }
    warn(str_cat("refusing ", c.peer, ": ", why));
    n_dropped++;
    wire::encode_response(c.out, wire::Status::refused, why);
    c.closing = true;
  }

  void handle_request(Conn& c, wire::Request q) {
    using wire::Op;
    using wire::Status;
    const std::string key = q.keys.empty() ? std::string() : q.keys[0];
    Bytes out;
    switch (q.op) {
      case Op::set:
        data[key] = std::move(q.value);
        reply(c, Status::ok);
        return notify(key);
      case Op::get:
      case Op::wait:
        if (first_missing(q.keys)) return park(c, std::move(q));
        return answer_wait(c, q);
      case Op::add: return handle_add(c, key, q.delta);
      case Op::compare_set: return handle_compare_set(c, key, q);
      case Op::check: out.push_back(first_missing(q.keys) ? 0 : 1); break;
      case Op::delete_key: out.push_back(data.erase(key) ? 1 : 0); break;
      case Op::num_keys: wire::put_i64(out, int64_t(data.size())); break;
      case Op::ping: break;
    }
    reply(c, Status::ok, out);
  }

  void handle_add(Conn& c, const std::string& key, int64_t delta) {
    int64_t v = 0;
    auto it = data.find(key);
    if (it != data.end()) {
      try {
        v = parse_counter(key, it->second);
      } catch (const InvalidArgument& e) {
        return wire::encode_response(c.out, wire::Status::error, std::string_view(e.what()));
      }
    }
    // Wrap like the two's-complement hardware would instead of signed-overflow UB.
    v = int64_t(uint64_t(v) + uint64_t(delta));
    data[key] = to_bytes(std::to_string(v));
    Bytes out;
    wire::put_i64(out, v);
    reply(c, wire::Status::ok, out);
    notify(key);
  }

  void handle_compare_set(Conn& c, const std::string& key, wire::Request& q) {
    auto it = data.find(key);
    bool absent = it == data.end();
    if (absent ? q.expected.empty() : it->second == q.expected) {
      Bytes& v = data[key];
      v = std::move(q.value);
      reply(c, wire::Status::ok, v);
      return notify(key);
    }
    reply(c, wire::Status::ok, absent ? q.expected : it->second);
  }

  const std::string* first_missing(const std::vector<std::string>& keys) const {
    for (auto& k : keys) {
      if (!data.count(k)) return &k;
    }
    return nullptr;
  }

  void answer_wait(Conn& c, const wire::Request& q) {
    if (q.op == wire::Op::get) return reply(c, wire::Status::ok, data.at(q.keys[0]));
    reply(c, wire::Status::ok);
  }

  // ---- parked waiters ---------------------------------------------------------------------

  void park(Conn& c, wire::Request q) {
    c.blocked = true;
    c.wait_seq = ++next_seq;
    c.waiting = std::move(q);
    c.wait_key = *first_missing(c.waiting.keys);
    waiters[c.wait_key].emplace_back(c.fd.get(), c.wait_seq);
    timers.emplace(Clock::now() + Millis(c.waiting.timeout_ms), c.fd.get(), c.wait_seq);
    n_waiters++;
  }

  void unpark(Conn& c) {
    auto it = waiters.find(c.wait_key);
    if (it != waiters.end()) {
      std::erase(it->second, std::make_pair(c.fd.get(), c.wait_seq));
      if (it->second.empty()) waiters.erase(it);
    }
    c.blocked = false;
    c.waiting = {};
    n_waiters--;
    runnable.push_back(c.fd.get());  // it may have pipelined requests behind the wait
  }

  Conn* live_waiter(int fd, uint64_t seq) {
    auto it = conns.find(fd);
    if (it == conns.end()) return nullptr;
    Conn& c = *it->second;
    return (!c.dead && c.blocked && c.wait_seq == seq) ? &c : nullptr;
  }

  void notify(const std::string& key) {
    auto it = waiters.find(key);
    if (it == waiters.end()) return;
    auto list = std::move(it->second);
    waiters.erase(it);
    for (auto [fd, seq] : list) {
      Conn* c = live_waiter(fd, seq);
      if (!c) continue;
      if (const std::string* missing = first_missing(c->waiting.keys)) {
        c->wait_key = *missing;  // a multi-key wait moves on to its next missing key
        waiters[c->wait_key].emplace_back(fd, seq);
        continue;
      }
      answer_wait(*c, c->waiting);
      c->wait_key.clear();
      unpark(*c);
    }
  }

  void expire_timers(Clock::time_point now) {
    while (!timers.empty() && std::get<0>(timers.top()) <= now) {
      auto [at, fd, seq] = timers.top();
      timers.pop();
      Conn* c = live_waiter(fd, seq);
      if (!c) continue;
      std::string missing;
      for (auto& k : c->waiting.keys) {
        if (!data.count(k)) missing += (missing.empty() ? "'" : ", '") + k + "'";
      }
      wire::encode_response(c->out, wire::Status::timeout, missing);
      unpark(*c);
    }
  }

  void drain_runnable() {
    // Swap first: processing a connection may set keys and wake yet more waiters.
    while (!runnable.empty()) {
      auto batch = std::move(runnable);
      runnable.clear();
      for (int fd : batch) {
        auto it = conns.find(fd);
        if (it == conns.end() || it->second->dead) continue;
        Conn& c = *it->second;
        try {
          process_input(c);
        } catch (const std::exception& e) {
          n_dropped++;
          drop(c, e.what());
        }
        update_interest(c);
      }
    }
  }

  void sweep(Clock::time_point now) {
    if (accept_paused && now >= accept_resume) {
      mod_fd(listen.get(), EPOLLIN);
      accept_paused = false;
    }
    if (now - last_sweep < kSweepEvery) return;
    last_sweep = now;
    if (const int64_t n = warnings.take_suppressed(now)) {
      LOCKSTEP_LOG(warn, "store server on ", where(), ": ", n, " more warnings about clients in ",
                   kWarningWindow.count(), " s (", n_dropped.load(),
                   " connections dropped in all)");
    }
    for (auto& [fd, c] : conns) {
      if (!c->authed && !c->dead && now - c->opened > opts.hello_timeout) {
        n_dropped++;
        drop(*c, str_cat("no valid hello within ", opts.hello_timeout.count(), " ms"));
      }
    }
  }
};

TcpStoreServer::TcpStoreServer(TcpStoreServerOptions opts)
    : impl_(std::make_unique<Impl>(std::move(opts))) {}

TcpStoreServer::~TcpStoreServer() {
  stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

const std::string& TcpStoreServer::host() const { return impl_->opts.host; }
uint16_t TcpStoreServer::port() const { return impl_->opts.port; }

void TcpStoreServer::start() {
  LOCKSTEP_CHECK(!impl_->thread.joinable(), "TcpStoreServer::start called twice");
  impl_->thread = std::thread([impl = impl_.get()] {
    try {
      impl->run();
    } catch (const std::exception& e) {
      LOCKSTEP_LOG(error, "store server on ", impl->where(), " stopped: ", e.what());
    }
  });
}

void TcpStoreServer::run() { impl_->run(); }

void TcpStoreServer::stop() {
  impl_->stop_requested = true;
  uint64_t one = 1;
  // The eventfd only fails if its counter would overflow, which means a wake-up is pending.
  [[maybe_unused]] auto r = ::write(impl_->wake.get(), &one, sizeof one);
}

TcpStoreServer::Stats TcpStoreServer::stats() const {
  return {impl_->n_conns.load(), impl_->n_waiters.load(), impl_->n_dropped.load()};
}

}  // namespace lockstep::store
