#include "lockstep/store/tcp_store.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"
#include "lockstep/store/wire.h"

namespace lockstep::store {
namespace {

constexpr Millis kFirstBackoff{10};
constexpr Millis kMaxBackoff{1000};
constexpr Millis kMaxAttempt{5000};  // one connect attempt, so a lost SYN is retried

// Extra time the client allows beyond a server-side wait before it gives up on the socket.
Millis reply_grace(Millis server_wait) {
  return std::clamp(server_wait / 10, Millis(2000), Millis(60000));
}

// Keeps Deadline::after() clear of overflow for "wait forever" style timeouts.
constexpr Millis kMaxBudget{std::chrono::hours(24 * 365)};

uint32_t clamp_ms(Millis t) {
  auto c = std::clamp<int64_t>(t.count(), 0, std::numeric_limits<uint32_t>::max());
  return uint32_t(c);
}

wire::Request make(wire::Op op, std::vector<std::string> keys) {
  wire::Request r;
  r.op = op;
  r.keys = std::move(keys);
  return r;
}

void check_keys(const std::vector<std::string>& keys) {
  if (keys.size() > wire::kMaxWaitKeys) {
    LOCKSTEP_THROW(InvalidArgument, "store check/wait on ", keys.size(),
                   " keys exceeds the limit of ", wire::kMaxWaitKeys, " per call");
  }
  for (auto& k : keys) check_key(k);
}

}  // namespace

std::string describe_keys(const std::vector<std::string>& keys) {
  constexpr size_t kShown = 8;
  std::string s;
  for (size_t i = 0; i < keys.size() && i < kShown; ++i) {
    s += (i ? ", '" : "'") + keys[i].substr(0, 200) + "'";
  }
  if (keys.size() > kShown) s += str_cat(" and ", keys.size() - kShown, " more");
  return s.empty() ? "(no key)" : s;
}

TcpStore::TcpStore(TcpStoreOptions opts) : opts_(std::move(opts)) {
  if (opts_.token) {
    token_ = *opts_.token;
  } else if (const char* env = std::getenv("LOCKSTEP_STORE_TOKEN")) {
    token_ = env;
  }
  if (token_.size() > wire::kMaxTokenBytes) {
    LOCKSTEP_THROW(ConfigError, "store token of ", token_.size(), " bytes exceeds the limit of ",
                   wire::kMaxTokenBytes, " bytes (LOCKSTEP_STORE_TOKEN)");
  }
  timeout_ = opts_.timeout;
  if (opts_.start_server) {
    server_ = std::make_unique<TcpStoreServer>(
        TcpStoreServerOptions{.host = opts_.host, .port = opts_.port, .token = token_});
    server_->start();
    opts_.port = server_->port();
  }
  std::lock_guard lk(mu_);
  connect(Deadline::after(opts_.connect_timeout));
}

TcpStore::~TcpStore() = default;

std::string TcpStore::where() const { return str_cat(opts_.host, ":", opts_.port); }

void TcpStore::connect(const Deadline& dl) {
  Millis backoff = kFirstBackoff;
  int err = 0;
  std::string last;
  for (;;) {
    auto attempt = Deadline(std::min(dl.at(), Clock::now() + kMaxAttempt));
    fd_ = net::connect_once(opts_.host, opts_.port, attempt, &err);
    if (fd_) {
      hello(dl);  // throws when refused; leaves fd_ empty when the server hung up
      if (fd_) return;
      last = "the server closed the connection during the hello";
    } else {
      last = std::strerror(err);
    }
    if (dl.expired()) {
      LOCKSTEP_THROW(TimeoutError, "could not connect to the store at ", where(), " in time (",
                     opts_.connect_timeout.count(), " ms budget); last error: ", last,
                     " (is the store server, rank 0 or the launcher, running, and are "
                     "MASTER_ADDR/MASTER_PORT right?)");
    }
    // Back off exponentially so that many workers starting before the server do not hammer it.
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, dl.remaining()));
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

void TcpStore::hello(const Deadline& dl) {
  Bytes msg;
  wire::encode_hello(msg, token_);
  uint8_t hdr[wire::kFrameHeaderBytes];
  if (net::send_all(fd_.get(), msg, dl) != net::Io::ok ||
      net::recv_exact(fd_.get(), hdr, dl) != net::Io::ok) {
    fd_.reset();
    return;
  }
  Bytes body(wire::frame_body_length(hdr, wire::kMaxHelloBytes));
  if (net::recv_exact(fd_.get(), body, dl) != net::Io::ok) {
    fd_.reset();
    return;
  }
  auto resp = wire::parse_response(body);
  if (resp.status == wire::Status::ok) return;
  fd_.reset();
  std::string why(resp.payload.begin(), resp.payload.end());
  LOCKSTEP_THROW(ConfigError, "the store at ", where(), " refused the connection: ", why,
                 " (set LOCKSTEP_STORE_TOKEN, or TcpStoreOptions::token, to the server's token)");
}

net::Io TcpStore::read_frame(Bytes& frame, const Deadline& dl) {
  // One read usually brings the whole reply; only big values need a second pass.
  constexpr size_t kFirstRead = 4096;
  frame.resize(kFirstRead);
  size_t got = 0;
  while (got < wire::kFrameHeaderBytes) {
    size_t n = 0;
    auto io = net::recv_some(fd_.get(), std::span(frame).subspan(got), dl, &n);
    if (io != net::Io::ok) return io;
    got += n;
  }
  size_t total = wire::kFrameHeaderBytes + wire::frame_body_length(frame);
  if (got > total) {
    LOCKSTEP_THROW(ProtocolError, got - total, " unexpected bytes after the reply");
  }
  frame.resize(total);
  return net::recv_exact(fd_.get(), std::span(frame).subspan(got), dl);
}

Bytes TcpStore::call(const wire::Request& req, Millis budget) {
  std::lock_guard lk(mu_);
  budget = std::clamp(budget, Millis(0), kMaxBudget);
  auto dl = Deadline::after(budget);
  if (!fd_) connect(Deadline(std::min(dl.at(), Clock::now() + opts_.connect_timeout)));
  Bytes msg;
  wire::encode_request(msg, req);
  try {
    auto io = net::send_all(fd_.get(), msg, dl);
    if (io == net::Io::ok) io = read_frame(msg, dl);  // reuses msg's buffer for the reply
    if (io != net::Io::ok) fail_io(io, req, budget);
    auto resp = wire::parse_response(std::span(msg).subspan(wire::kFrameHeaderBytes));
    if (resp.status == wire::Status::ok) return Bytes(resp.payload.begin(), resp.payload.end());
    std::string msg_text(resp.payload.begin(), resp.payload.end());
    if (resp.status == wire::Status::timeout) {
      LOCKSTEP_THROW(TimeoutError, "store ", wire::op_name(req.op), " timed out after ",
                     req.timeout_ms, " ms at ", where(), "; missing key(s): ", msg_text,
                     " (is every worker started, with the same store address?)");
    }
    LOCKSTEP_THROW(InvalidArgument, "store ", wire::op_name(req.op), " of ",
                   describe_keys(req.keys), " at ", where(), " failed: ", msg_text);
  } catch (const ProtocolError& e) {
    fd_.reset();  // the byte stream is no longer in step with the server
    LOCKSTEP_THROW(ProtocolError, "bad reply from the store at ", where(), " to ",
                   wire::op_name(req.op), " of ", describe_keys(req.keys), ": ", e.what());
  }
}

void TcpStore::fail_io(net::Io io, const wire::Request& req, Millis budget) {
  // A late reply would be read as the answer to the next request: start afresh instead.
  fd_.reset();
  const char* op = wire::op_name(req.op);
  if (io == net::Io::timeout) {
    LOCKSTEP_THROW(TimeoutError, "store ", op, " of ", describe_keys(req.keys), " at ", where(),
                   " got no reply within ", budget.count(),
                   " ms (the store server is stalled or unreachable)");
  }
  throw PeerError(-1, op,
                  str_cat("the store at ", where(), " closed the connection during ", op, " of ",
                          describe_keys(req.keys),
                          " (has the store server, rank 0 or the launcher, exited?)"));
}

void TcpStore::set(const std::string& key, std::span<const uint8_t> value) {
  set_within(key, value, timeout_);
}

Bytes TcpStore::get(const std::string& key, Millis timeout) {
  check_key(key);
  auto r = make(wire::Op::get, {key});
  r.timeout_ms = clamp_ms(timeout);
  return call(r, Millis(r.timeout_ms) + reply_grace(Millis(r.timeout_ms)));
}

int64_t TcpStore::add(const std::string& key, int64_t delta) {
  check_key(key);
  auto r = make(wire::Op::add, {key});
  r.delta = delta;
  return wire::get_i64(call(r, timeout_));
}

Bytes TcpStore::compare_set(const std::string& key, std::span<const uint8_t> expected,
                            std::span<const uint8_t> desired) {
  return compare_set_within(key, expected, desired, timeout_);
}

Bytes TcpStore::compare_set_within(const std::string& key, std::span<const uint8_t> expected,
                                   std::span<const uint8_t> desired, Millis timeout) {
  check_key(key);
  check_value(expected);
  check_value(desired);
  auto r = make(wire::Op::compare_set, {key});
  r.expected.assign(expected.begin(), expected.end());
  r.value.assign(desired.begin(), desired.end());
  return call(r, timeout);
}

bool TcpStore::check(const std::vector<std::string>& keys) { return check_within(keys, timeout_); }

bool TcpStore::check_within(const std::vector<std::string>& keys, Millis timeout) {
  check_keys(keys);
  auto out = call(make(wire::Op::check, keys), timeout);
  return out.size() == 1 && out[0] == 1;
}

void TcpStore::set_within(const std::string& key, std::span<const uint8_t> value, Millis timeout) {
  check_key(key);
  check_value(value);
  auto r = make(wire::Op::set, {key});
  r.value.assign(value.begin(), value.end());
  call(r, timeout);
}

void TcpStore::wait(const std::vector<std::string>& keys, Millis timeout) {
  check_keys(keys);
  auto r = make(wire::Op::wait, keys);
  r.timeout_ms = clamp_ms(timeout);
  call(r, Millis(r.timeout_ms) + reply_grace(Millis(r.timeout_ms)));
}

bool TcpStore::delete_key(const std::string& key) {
  check_key(key);
  auto out = call(make(wire::Op::delete_key, {key}), timeout_);
  return out.size() == 1 && out[0] == 1;
}

int64_t TcpStore::num_keys() { return wire::get_i64(call(make(wire::Op::num_keys, {}), timeout_)); }

}  // namespace lockstep::store
