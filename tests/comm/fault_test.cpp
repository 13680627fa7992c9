// Faults with real processes (label multiproc): a rank killed with SIGKILL in the middle of
// all-reduces, and a rank stopped with SIGSTOP. The survivors must fail with an error naming
// the peer and the operation — the killed case well before the timeout, the stopped case
// within it, and the flight recorder's summary says who reported how far. Every child is killed and reaped by run_local_ranks.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "local_ranks.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/lockstep-fault-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf " + path).c_str()); }
  std::string read(int rank) const {
    std::ifstream f(path + "/rank" + std::to_string(rank));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // Waits (up to 60 s) until every rank has finished its first all-reduce, so that a fault
  // lands in the steady loop and not in start-up, however slow start-up is on this machine.
  bool wait_all_running(int world) const {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (int r = 0; r < world; ++r)
      while (::access((path + "/running" + std::to_string(r)).c_str(), F_OK) != 0) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    return true;
  }
};

// Every rank all-reduces 1 MiB in a loop until an error; it writes the error to dir/rank<r>.
int loop_until_error(const std::string& transport, const std::string& dir, int rank, int world,
                     store::Store& store, Millis timeout) {
  Options o;
  o.transport = transport;
  o.group_name = "fault";
  o.timeout = timeout;
  auto pg = ProcessGroup::create("native", store, rank, world, o);
  std::vector<float> v(256 << 10, 1.0f);
  std::ofstream out(dir + "/rank" + std::to_string(rank));
  try {
    for (int i = 0; i < 1000000; ++i) {
      std::fill(v.begin(), v.end(), 1.0f);
      pg->allreduce(v.data(), v.size(), DType::f32, ReduceOp::sum).wait();
      if (i == 0) std::ofstream(dir + "/running" + std::to_string(rank)) << "1";
    }
  } catch (const PeerError& e) {
    out << "PeerError peer=" << e.peer_rank() << " " << e.what();
    return 0;
  } catch (const TimeoutError& e) {
    out << "TimeoutError " << e.what();
    return 0;
  }
  return 3;
}

class FaultTest : public ::testing::TestWithParam<std::string> {
 protected:
  struct Outcome {
    std::vector<int> codes;  // exit code per rank
    double secs_after_signal = 0;
    bool running = false;    // every rank reached its first all-reduce before the signal
  };
  // Runs `world` ranks looping over all-reduces (collective timeout `timeout`), sends
  // `signal` to rank `victim` once all run, and waits for the ranks that must finish.
  Outcome inject(const TempDir& dir, int world, int victim, int signal, Millis timeout) {
    Outcome o;
    std::chrono::steady_clock::time_point sent;
    o.codes = local::run_local_ranks(
        world, std::chrono::seconds(120),
        [&](int r, int w, store::Store& s) { return loop_until_error(GetParam(), dir.path, r, w, s, timeout); },
        [&](const std::vector<pid_t>& pids) {
          o.running = dir.wait_all_running(world);
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          sent = std::chrono::steady_clock::now();
          ::kill(pids[size_t(victim)], signal);
        },
        [&](int r) { return signal == SIGKILL || r != victim; });  // a stopped rank is not waited for
    o.secs_after_signal = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
    return o;
  }
};

TEST_P(FaultTest, KilledRankIsNamedBeforeTheTimeout) {
  TempDir dir;
  const int victim = 1;
  const Outcome o = inject(dir, 3, victim, SIGKILL, std::chrono::seconds(20));
  ASSERT_TRUE(o.running) << "the ranks did not all reach their first all-reduce within 60 s";
  EXPECT_EQ(o.codes[victim], -SIGKILL);
  EXPECT_LT(o.secs_after_signal, 10.0) << "survivors took too long to notice (the timeout is 20 s)";
  for (int r : {0, 2}) {
    EXPECT_EQ(o.codes[size_t(r)], 0) << "rank " << r;
    std::string msg = dir.read(r);
    EXPECT_NE(msg.find("allreduce #"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
    // The flight recorder: the dead rank never reports; the other survivor does.
    EXPECT_NE(msg.find("no report from rank(s) 1 "), std::string::npos) << msg;
    EXPECT_NE(msg.find(str_cat("rank ", 2 - r, " last completed #")), std::string::npos) << msg;
  }
}

TEST_P(FaultTest, StoppedRankTimesOutNamingIt) {
  TempDir dir;
  const Outcome o = inject(dir, 2, /*victim=*/1, SIGSTOP, std::chrono::seconds(3));
  const auto& codes = o.codes;
  const double secs = o.secs_after_signal;
  ASSERT_TRUE(o.running) << "the ranks did not all reach their first all-reduce within 60 s";
  EXPECT_LT(secs, 3.0 + 5.0) << "the survivor should time out after 3 s";
  EXPECT_EQ(codes[0], 0);
  std::string msg = dir.read(0);
  EXPECT_NE(msg.find("TimeoutError"), std::string::npos) << msg;
  EXPECT_NE(msg.find("allreduce #"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("flight recorder: this rank (0) last completed collective #"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no report from rank(s) 1 "), std::string::npos) << msg;
}

INSTANTIATE_TEST_SUITE_P(Native, FaultTest, ::testing::Values("shm", "tcp"));

}  // namespace
}  // namespace lockstep::comm
