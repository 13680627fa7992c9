// TcpStore and TcpStoreServer beyond the Store contract: many clients, thousands of parked
// waiters, tokens, connect retries, timeouts, server death, and hostile bytes on the wire.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "lockstep/store/tcp_store.h"
#include "store_test_util.h"

namespace lockstep::store {
namespace {

using namespace std::chrono_literals;
using namespace testing;

TcpStoreOptions client_opts(uint16_t port, std::string token = "t0k") {
  return TcpStoreOptions{.port = port, .token = std::move(token), .connect_timeout = 5s,
                         .timeout = 10s};
}

// Polls cond() until true or 10 s have passed.
template <class F>
bool eventually(F cond) {
  auto dl = Deadline::after(10s);
  while (!cond()) {
    if (dl.expired()) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

class TcpStoreTest : public ::testing::Test {
 protected:
  TcpStoreTest() : server_(TcpStoreServerOptions{.token = "t0k"}) { server_.start(); }
  TcpStore client() { return TcpStore(client_opts(server_.port())); }
  // A raw connection that has passed the hello.
  net::Fd hello_conn() {
    auto fd = raw_connect(server_.port());
    Bytes hello;
    wire::encode_hello(hello, "t0k");
    raw_send(fd.get(), hello);
    EXPECT_EQ(raw_reply(fd.get()).first, wire::Status::ok);
    return fd;
  }
  TcpStoreServer server_;
};

TEST_F(TcpStoreTest, BindsLoopbackOnAnEphemeralPort) {
  EXPECT_EQ(server_.host(), "127.0.0.1");
  EXPECT_GT(server_.port(), 0);
}

TEST_F(TcpStoreTest, SixtyFourConcurrentClientThreads) {
  constexpr int kClients = 64;
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  std::vector<std::string> all;
  for (int r = 0; r < kClients; ++r) all.push_back("rank/" + std::to_string(r));
  for (int r = 0; r < kClients; ++r) {
    ts.emplace_back([&, r] {
      TcpStore s = client();
      s.set(all[size_t(r)], std::to_string(r * 10));
      s.add("arrived", 1);
      s.wait(all, 20s);  // a barrier: every client parks until the last one arrives
      auto peer = s.get_string(all[size_t((r + 1) % kClients)]);
      if (peer == std::to_string(((r + 1) % kClients) * 10)) ok++;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), kClients);
  EXPECT_EQ(client().add("arrived", 0), kClients);
}

TEST_F(TcpStoreTest, OneClientSharedByThreads) {
  TcpStore s = client();
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 100; ++i) s.add("shared", 1);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(s.add("shared", 0), 800);
}

TEST_F(TcpStoreTest, TwoThousandWaitersOnOneServerThread) {
  // Parked requests on raw connections: no client thread is blocked, and neither is the server.
  constexpr int kWaiters = 2000;
  std::vector<net::Fd> fds;
  Bytes req;
  wire::Request get;
  get.op = wire::Op::get;
  get.keys = {"go"};
  get.timeout_ms = 30000;
  wire::encode_request(req, get);
  for (int i = 0; i < kWaiters; ++i) {
    fds.push_back(raw_connect(server_.port()));
    Bytes msg;
    wire::encode_hello(msg, "t0k");
    msg.insert(msg.end(), req.begin(), req.end());  // pipelined behind the hello
    raw_send(fds.back().get(), msg);
  }
  ASSERT_TRUE(eventually([&] { return server_.stats().waiters == kWaiters; }))
      << server_.stats().waiters;
  client().set("go", std::string_view("now"));
  for (auto& fd : fds) {
    ASSERT_EQ(raw_reply(fd.get()).first, wire::Status::ok);  // the hello
    auto [st, value] = raw_reply(fd.get());
    ASSERT_EQ(st, wire::Status::ok);
    ASSERT_EQ(to_string(value), "now");
  }
  EXPECT_EQ(server_.stats().waiters, 0);
}

TEST_F(TcpStoreTest, WrongOrMissingTokenIsRefused) {
  for (std::string bad : {"wrong", "", "t0k-but-longer", "t0"}) {
    try {
      TcpStore s(client_opts(server_.port(), bad));
      FAIL() << "token '" << bad << "' was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("wrong store token"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::to_string(server_.port())), std::string::npos);
    }
  }
  client().set("still", std::string_view("works"));
}

TEST_F(TcpStoreTest, TokenFromEnvironment) {
  ::setenv("LOCKSTEP_STORE_TOKEN", "t0k", 1);
  TcpStore s(TcpStoreOptions{.port = server_.port(), .token = std::nullopt, .connect_timeout = 5s});
  ::unsetenv("LOCKSTEP_STORE_TOKEN");
  s.set("env", std::string_view("ok"));
  EXPECT_THROW(TcpStore(TcpStoreOptions{.port = server_.port(), .token = std::nullopt, .connect_timeout = 5s}),
               ConfigError);
}

TEST_F(TcpStoreTest, StartServerInsideTheStore) {
  TcpStore rank0(TcpStoreOptions{.port = 0, .token = "x", .start_server = true});
  ASSERT_NE(rank0.server(), nullptr);
  EXPECT_GT(rank0.port(), 0);
  TcpStore rank1(TcpStoreOptions{.port = rank0.port(), .token = "x"});
  rank0.set("hi", std::string_view("there"));
  EXPECT_EQ(rank1.get_string("hi"), "there");
}

TEST_F(TcpStoreTest, HugeTimeoutsDoNotOverflow) {
  TcpStore s = client();
  s.set_timeout(Millis::max());
  s.set("k", std::string_view("v"));
  EXPECT_EQ(s.get_string("k"), "v");
  s.wait({"k"}, Millis::max());
}

TEST(TcpStoreConnect, RetriesUntilTheServerStarts) {
  uint16_t port;
  { port = TcpStoreServer(TcpStoreServerOptions{.token = "r"}).port(); }  // find a free port
  std::unique_ptr<TcpStoreServer> late;
  const auto t0 = Clock::now();  // before the starter's sleep begins
  std::thread starter([&] {
    std::this_thread::sleep_for(300ms);
    late = std::make_unique<TcpStoreServer>(TcpStoreServerOptions{.port = port, .token = "r"});
    late->start();
  });
  TcpStore s(TcpStoreOptions{.port = port, .token = "r", .connect_timeout = 10s});
  EXPECT_GE(seconds_since(t0), 0.3);
  starter.join();
  s.set("k", std::string_view("v"));
}

TEST(TcpStoreConnect, GivesUpAtTheDeadlineNamingTheAddress) {
  uint16_t port;
  { port = TcpStoreServer().port(); }
  auto t0 = Clock::now();
  try {
    TcpStore s(TcpStoreOptions{.port = port, .token = std::nullopt, .connect_timeout = 300ms});
    FAIL() << "connected to nothing";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)), std::string::npos)
        << e.what();
  }
  EXPECT_LT(seconds_since(t0), 3.0);
}

TEST(TcpStoreServerDeath, BlockedClientSeesAnErrorNotAHang) {
  auto server = std::make_unique<TcpStoreServer>(TcpStoreServerOptions{.token = "d"});
  server->start();
  uint16_t port = server->port();
  TcpStore s(TcpStoreOptions{.port = port, .token = "d", .connect_timeout = 1s});
  std::thread killer([&] {
    std::this_thread::sleep_for(100ms);
    server.reset();
  });
  auto t0 = Clock::now();
  try {
    s.get("never-set", 20s);
    FAIL() << "get returned";
  } catch (const PeerError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << m;
    EXPECT_NE(m.find("closed"), std::string::npos) << m;
    EXPECT_NE(m.find("never-set"), std::string::npos) << m;
  }
  EXPECT_LT(seconds_since(t0), 3.0);
  killer.join();
  // Later calls fail within their own bound (reconnect attempts end at the call's deadline).
  s.set_timeout(300ms);
  t0 = Clock::now();
  EXPECT_THROW(s.set("after", std::string_view("x")), Error);
  EXPECT_LT(seconds_since(t0), 3.0);
}

TEST(TcpStoreStall, EveryCallHasASocketTimeout) {
  // A fake server that completes the hello and then never answers.
  auto listener = net::listen_tcp("127.0.0.1", 0, 4);
  uint16_t port = net::bound_port(listener.get());
  std::atomic<bool> done{false};
  std::thread fake([&] {
    net::Fd conn;
    while (!done && !conn) {
      conn = net::Fd(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK));
      std::this_thread::sleep_for(1ms);
    }
    uint8_t hdr[4];
    net::recv_exact(conn.get(), hdr, Deadline::after(5s));
    Bytes body(wire::frame_body_length(hdr));
    net::recv_exact(conn.get(), body, Deadline::after(5s));
    Bytes ok;
    wire::encode_response(ok, wire::Status::ok, std::string_view());
    raw_send(conn.get(), ok);
    while (!done) std::this_thread::sleep_for(5ms);
  });
  TcpStore s(TcpStoreOptions{.port = port, .token = std::nullopt, .connect_timeout = 5s, .timeout = 300ms});
  auto t0 = Clock::now();
  try {
    s.set("stalled-key", std::string_view("v"));
    FAIL() << "set returned";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("stalled-key"), std::string::npos) << e.what();
  }
  EXPECT_LT(seconds_since(t0), 3.0);
  // The bounded variants give up after their own budget, not the store's default.
  s.set_timeout(60s);
  const Bytes v{1};
  for (int which = 0; which < 3; ++which) {
    t0 = Clock::now();
    try {
      if (which == 0) s.set_within("stalled-key", v, 300ms);
      if (which == 1) (void)s.check_within({"stalled-key"}, 300ms);
      if (which == 2) (void)s.compare_set_within("stalled-key", {}, v, 300ms);
      FAIL() << "bounded call " << which << " returned";
    } catch (const Error& e) {  // a timeout, or the connection the previous timeout closed
    }
    EXPECT_LT(seconds_since(t0), 3.0) << "bounded call " << which;
  }
  done = true;
  fake.join();
}

// ---- hostile bytes: each case must cost only its own connection ----------------------------

class TcpStoreHostileTest : public TcpStoreTest {
 protected:
  void expect_dropped(net::Fd fd) {
    EXPECT_TRUE(closed_by_peer(fd.get(), 5s)) << "server kept a bad connection open";
    good_.set("alive", std::to_string(++n_));
    EXPECT_EQ(good_.get_string("alive"), std::to_string(n_));
  }
  void send_frame(int fd, uint32_t len, const Bytes& body) {
    Bytes b;
    for (int i = 0; i < 4; ++i) b.push_back(uint8_t(len >> (8 * i)));
    b.insert(b.end(), body.begin(), body.end());
    raw_send(fd, b);
  }
  TcpStore good_ = client();
  int n_ = 0;
};

TEST_F(TcpStoreHostileTest, GarbageInsteadOfHello) {
  auto fd = raw_connect(server_.port());
  raw_send(fd.get(), to_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  expect_dropped(std::move(fd));
}

TEST_F(TcpStoreHostileTest, OversizedHello) {
  auto fd = raw_connect(server_.port());
  send_frame(fd.get(), 1u << 20, Bytes(64, 0));
  expect_dropped(std::move(fd));
}

TEST_F(TcpStoreHostileTest, OversizedFrameAfterHello) {
  auto fd = hello_conn();
  send_frame(fd.get(), 0xFFFFFFFFu, Bytes(16, 1));
  expect_dropped(std::move(fd));
}

TEST_F(TcpStoreHostileTest, UnknownOp) {
  auto fd = hello_conn();
  send_frame(fd.get(), 1, Bytes{0xEE});
  expect_dropped(std::move(fd));
}

TEST_F(TcpStoreHostileTest, KeyLengthOverTheBound) {
  auto fd = hello_conn();
  uint32_t klen = uint32_t(kMaxKeyBytes + 1);
  Bytes body(5 + klen + 4, 'k');
  body[0] = uint8_t(wire::Op::set);
  for (int i = 0; i < 4; ++i) body[size_t(1 + i)] = uint8_t(klen >> (8 * i));
  send_frame(fd.get(), uint32_t(body.size()), body);
  expect_dropped(std::move(fd));
}

TEST_F(TcpStoreHostileTest, FieldTruncatedInsideAFrame) {
  auto fd = hello_conn();
  Bytes body = {uint8_t(wire::Op::set), 100, 0, 0, 0, 'a', 'b'};  // key says 100 bytes, has 2
  send_frame(fd.get(), uint32_t(body.size()), body);
  expect_dropped(std::move(fd));
}

TEST_F(TcpStoreHostileTest, FrameTruncatedByDisconnect) {
  auto fd = hello_conn();
  send_frame(fd.get(), 100, Bytes(10, 0));  // promises 100 bytes, sends 10, leaves
  fd.reset();
  good_.set("alive", std::string_view("yes"));
  EXPECT_EQ(good_.get_string("alive"), "yes");
  EXPECT_TRUE(eventually([&] { return server_.stats().connections == 1; }));
}

TEST_F(TcpStoreHostileTest, SilentConnectionIsDroppedAfterHelloTimeout) {
  TcpStoreServer quick(TcpStoreServerOptions{.token = std::nullopt, .hello_timeout = 200ms});
  quick.start();
  auto fd = raw_connect(quick.port());
  EXPECT_TRUE(closed_by_peer(fd.get(), 5s));
}

TEST_F(TcpStoreHostileTest, WaiterThatDisconnectsIsForgotten) {
  {
    auto fd = hello_conn();
    Bytes req;
    wire::Request get;
    get.op = wire::Op::get;
    get.keys = {"nobody-sets-this"};
    get.timeout_ms = 60000;
    wire::encode_request(req, get);
    raw_send(fd.get(), req);
    ASSERT_TRUE(eventually([&] { return server_.stats().waiters == 1; }));
  }
  EXPECT_TRUE(eventually([&] { return server_.stats().waiters == 0; }));
  good_.set("alive", std::string_view("yes"));
}

TEST(StoreToken, ConstantTimeEqualComparesWholeStrings) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
  EXPECT_FALSE(constant_time_equal("", "a"));
  EXPECT_FALSE(constant_time_equal("a", ""));
}

TEST(StoreAdmission, LimitsFollowTheOpenFilesLimit) {
  const ConnectionLimits at256 = resolve_limits({}, 256);
  EXPECT_EQ(at256.max_connections, 192u);  // 64 descriptors left to the rest of the process
  EXPECT_EQ(at256.max_pending, 96u);
  EXPECT_EQ(at256.max_pending_per_peer, 24u);
  EXPECT_EQ(resolve_limits({}, uint64_t{1} << 20).max_connections, 65536u);
  EXPECT_EQ(resolve_limits({.max_pending = 7}, 256).max_pending_per_peer, 2u);
  EXPECT_EQ(peer_address("127.0.0.1:5678"), "127.0.0.1");
  EXPECT_EQ(peer_address("::1:5678"), "::1");
}

TEST(StoreAdmission, OldestPendingOverallAndPerPeer) {
  PendingConnections p;
  p.add(1, 10, "a");
  p.add(2, 11, "b");
  p.add(3, 12, "a");
  const std::string a = "a", b = "b", c = "c";
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.count(a), 2u);
  EXPECT_EQ(p.oldest()->fd, 10);
  p.remove(1);
  EXPECT_EQ(p.oldest()->fd, 11);
  EXPECT_EQ(p.oldest(&a)->fd, 12);
  EXPECT_FALSE(p.oldest(&c));
  p.remove(2);
  p.remove(2);  // twice: ignored
  EXPECT_FALSE(p.oldest(&b));
  EXPECT_EQ(p.size(), 1u);
}

TEST(StoreAdmission, WarningsPerWindowThenOneSummary) {
  WarnLimiter w(3, 10s);
  const auto t0 = Clock::now();
  int shown = 0;
  for (int i = 0; i < 100; ++i) shown += w.allow(t0);
  EXPECT_EQ(shown, 3);
  EXPECT_EQ(w.take_suppressed(t0 + 9s), 0);  // the window is not over
  EXPECT_FALSE(w.allow(t0 + 11s));           // held back until the summary is out
  EXPECT_EQ(w.take_suppressed(t0 + 11s), 98);
  EXPECT_EQ(w.take_suppressed(t0 + 30s), 0);
  EXPECT_TRUE(w.allow(t0 + 12s));  // a new window
}

}  // namespace
}  // namespace lockstep::store
