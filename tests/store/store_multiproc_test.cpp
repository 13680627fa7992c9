// Stores across real processes (fork): 64 client processes against one server process, a
// server killed with SIGKILL, a client killed while parked, FileStore shared by processes.
// Every child carries an alarm and is reaped (or killed) by pid when the test ends.
#include <gtest/gtest.h>

#include <thread>

#include "lockstep/store/file_store.h"
#include "lockstep/store/tcp_store.h"
#include "store_test_util.h"

namespace lockstep::store {
namespace {

using namespace std::chrono_literals;
using namespace testing;

// A TcpStoreServer in its own process. Its port comes back through a pipe.
class ServerProcess {
 public:
  ServerProcess() {
    int p[2];
    if (::pipe(p) != 0) throw std::runtime_error("pipe failed");
    child_ = std::make_unique<Child>([p] {
      ::close(p[0]);
      TcpStoreServer server(TcpStoreServerOptions{.token = "mp"});
      uint16_t port = server.port();
      if (::write(p[1], &port, sizeof port) != sizeof port) return 2;
      ::close(p[1]);
      server.run();  // until killed
      return 0;
    }, 60);
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
