// Stores across real processes (fork): 64 client processes against one server process, a
// server killed with SIGKILL, a client killed while parked, FileStore shared by processes.
// Every child carries an alarm and is reaped (or killed) by pid when the test ends.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>

#include <fstream>
#include <thread>

#include "lockstep/store/file_store.h"
#include "lockstep/store/tcp_store.h"
#include "store_test_util.h"

namespace lockstep::store {
namespace {

using namespace std::chrono_literals;
using namespace testing;

// A TcpStoreServer in its own process (after `setup` ran there). Its port comes back
// through a pipe.
class ServerProcess {
 public:
  explicit ServerProcess(const std::function<void()>& setup = [] {}) {
    int p[2];
    if (::pipe(p) != 0) throw std::runtime_error("pipe failed");
    child_ = std::make_unique<Child>(
        [p, &setup] {
          ::close(p[0]);
          setup();
          TcpStoreServer server(TcpStoreServerOptions{.token = "mp"});
          uint16_t port = server.port();
          if (::write(p[1], &port, sizeof port) != sizeof port) return 2;
          ::close(p[1]);
          server.run();  // until killed
          return 0;
        },
        60);
    ::close(p[1]);
    net::Fd rd(p[0]);
    if (::read(rd.get(), &port_, sizeof port_) != sizeof port_) {
      throw std::runtime_error("server process did not report its port");
    }
  }
  uint16_t port() const { return port_; }
  Child& child() { return *child_; }

 private:
  std::unique_ptr<Child> child_;
  uint16_t port_ = 0;
};

TcpStoreOptions opts(uint16_t port) {
  return TcpStoreOptions{.port = port, .token = "mp", .connect_timeout = 10s, .timeout = 20s};
}

TEST(StoreMultiproc, SixtyFourClientProcesses) {
  ServerProcess server;
  constexpr int kProcs = 64;
  std::vector<std::unique_ptr<Child>> kids;
  for (int r = 0; r < kProcs; ++r) {
    kids.push_back(std::make_unique<Child>([r, port = server.port()] {
      TcpStore s(opts(port));
      s.set("rank/" + std::to_string(r), std::to_string(r));
      int64_t arrived = s.add("arrived", 1);
      std::vector<std::string> all;
      for (int i = 0; i < kProcs; ++i) all.push_back("rank/" + std::to_string(i));
      s.wait(all, 20s);
      int next = (r + 1) % kProcs;
      bool ok = s.get_string("rank/" + std::to_string(next)) == std::to_string(next);
      return ok && arrived >= 1 && arrived <= kProcs ? 0 : 3;
    }));
  }
  for (auto& k : kids) EXPECT_EQ(k->wait(30s), 0) << "child " << k->pid();
  TcpStore s(opts(server.port()));
  EXPECT_EQ(s.add("arrived", 0), kProcs);
}

TEST(StoreMultiproc, KilledServerIsAnErrorNotAHang) {
  ServerProcess server;
  TcpStore s(opts(server.port()));
  s.set("before", std::string_view("ok"));
  std::thread killer([&] {
    std::this_thread::sleep_for(150ms);
    server.child().kill(SIGKILL);
  });
  auto t0 = Clock::now();
  try {
    s.get("never", 20s);
    FAIL() << "get returned";
  } catch (const PeerError& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(server.port())), std::string::npos);
  }
  EXPECT_LT(seconds_since(t0), 5.0);
  killer.join();
}

TEST(StoreMultiproc, KilledWaiterDoesNotDisturbOthers) {
  ServerProcess server;
  {
    Child waiter([port = server.port()] {
      TcpStore s(opts(port));
      s.set("waiter-ready", std::string_view("1"));
      s.get("never", 30s);
      return 0;
    });
    TcpStore s(opts(server.port()));
    s.get("waiter-ready", 10s);
    std::this_thread::sleep_for(50ms);
    waiter.kill(SIGKILL);
  }
  TcpStore s(opts(server.port()));
  s.set("never", std::string_view("now set"));
  EXPECT_EQ(s.get_string("never"), "now set");
  EXPECT_EQ(s.num_keys(), 2);
}

// Issue 18: 300 idle and 300 garbage connections against a server limited to 256 open files.
// The old server accepted until EMFILE and kept the idle ones until their 10 s hello timeout,
// so the workers behind them timed out; and it wrote one warning per garbage connection.
TEST(StoreMultiproc, ConnectionFloodLeavesRoomForTheJobAndFewWarnings) {
  TempDir dir;
  const std::string log = dir.file("server.log");
  ServerProcess server([&log] {
    const rlimit rl{256, 256};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) std::_Exit(4);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
  });
  std::vector<net::Fd> idle;
  for (int i = 0; i < 300; ++i) idle.push_back(raw_connect(server.port()));
  const std::string junk = "GET / HTTP/1.1\r\n\r\n";
  for (int i = 0; i < 300; ++i) {
    auto fd = raw_connect(server.port());
    [[maybe_unused]] auto n = ::send(fd.get(), junk.data(), junk.size(), MSG_NOSIGNAL);
  }
  // Two workers meet. 5 s: loopback needs milliseconds; the old server freed slots at 10 s.
  TcpStoreOptions o = opts(server.port());
  o.connect_timeout = 5s;
  TcpStore a(o), b(o);
  a.set("x", std::string_view("1"));
  EXPECT_EQ(b.get_string("x"), "1");
  server.child().kill(SIGKILL);
  std::ifstream in(log);
  int lines = 0;
  for (std::string line; std::getline(in, line);)
    lines += line.find("store server on") != std::string::npos;
  EXPECT_LE(lines, 12) << "10 warnings per 10 s window, then a summary line";
  EXPECT_GE(lines, 1);
}

TEST(StoreMultiproc, FileStoreSharedByProcesses) {
  TempDir dir;
  auto path = dir.file("store");
  constexpr int kProcs = 8, kEach = 25;
  std::vector<std::unique_ptr<Child>> kids;
  for (int r = 0; r < kProcs; ++r) {
    kids.push_back(std::make_unique<Child>([&path, r] {
      FileStore s(path, 20s);
      for (int i = 0; i < kEach; ++i) s.add("ctr", 1);
      s.set("done/" + std::to_string(r), std::string_view("1"));
      return 0;
    }));
  }
  std::vector<std::string> done;
  for (int r = 0; r < kProcs; ++r) done.push_back("done/" + std::to_string(r));
  FileStore s(path);
  s.wait(done, 30s);
  EXPECT_EQ(s.add("ctr", 0), kProcs * kEach);
  for (auto& k : kids) EXPECT_EQ(k->wait(10s), 0);
}

}  // namespace
}  // namespace lockstep::store
