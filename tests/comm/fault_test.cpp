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

// Every rank all-reduces 1 MiB in a loop until an error, `in_flight` operations at a time
// (1 MiB each, or 64 KiB when several); it writes the first error to dir/rank<r>, and with
// several in flight also how many of that round failed and the last one's error.
int loop_until_error(const std::string& transport, const std::string& dir, int rank, int world,
                     store::Store& store, Millis timeout, int in_flight = 1) {
  Options o;
  o.transport = transport;
  o.group_name = "fault";
  o.timeout = timeout;
  auto pg = ProcessGroup::create("native", store, rank, world, o);
  std::vector<std::vector<float>> v(size_t(in_flight), std::vector<float>(in_flight > 1 ? 16 << 10 : 256 << 10));
  std::ofstream out(dir + "/rank" + std::to_string(rank));
  std::vector<Work> works(static_cast<size_t>(in_flight));
  for (int i = 0; i < 1000000; ++i) {
    for (int k = 0; k < in_flight; ++k) {
      std::fill(v[size_t(k)].begin(), v[size_t(k)].end(), 1.0f);
      works[size_t(k)] = pg->allreduce(v[size_t(k)].data(), v[size_t(k)].size(), DType::f32, ReduceOp::sum);
    }
    int failed = 0;
    std::string last;
    auto wait = [&](const Work& w) {
      try {
        w.wait();
        return;
      } catch (const PeerError& e) {
        last = str_cat("PeerError peer=", e.peer_rank(), " ", e.what());
      } catch (const TimeoutError& e) {
        last = str_cat("TimeoutError ", e.what());
      }
      if (failed++ == 0) out << last;
    };
    for (auto& w : works) wait(w);
    if (failed > 0) {
      if (in_flight > 1) {  // one more after the failure, however many of this round failed
        wait(pg->allreduce(v[0].data(), v[0].size(), DType::f32, ReduceOp::sum));
        out << "\nfailed " << failed << " of " << in_flight + 1 << "; last: " << last;
      }
      return 0;
    }
    if (i == 0) std::ofstream(dir + "/running" + std::to_string(rank)) << "1";
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
  Outcome inject(const TempDir& dir, int world, int victim, int signal, Millis timeout, int in_flight = 1) {
    Outcome o;
    std::chrono::steady_clock::time_point sent;
    o.codes = local::run_local_ranks(
        world, std::chrono::seconds(120),
        [&](int r, int w, store::Store& s) {
          return loop_until_error(GetParam(), dir.path, r, w, s, timeout, in_flight);
        },
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
    // The flight recorder: the dead rank never reports (over shm it is seen to have exited,
    // and not waited for); the other survivor does.
    EXPECT_NE(msg.find(GetParam() == "shm" ? "rank 1 has exited" : "no report from rank(s) 1 "),
              std::string::npos) << msg;
    EXPECT_NE(msg.find(str_cat("rank ", 2 - r, " last completed #")), std::string::npos) << msg;
  }
}

// Operations queued behind the one that saw the peer die fail at once, pointing back to it:
// each used to wait for the flight-recorder reports again (2 s apiece), so a DDP step with
// its buckets in flight took many seconds to stop.
TEST_P(FaultTest, KilledRankFailsEveryQueuedOperationAtOnce) {
  TempDir dir;
  const int kInFlight = 8;
  const Outcome o = inject(dir, 3, /*victim=*/1, SIGKILL, std::chrono::seconds(30), kInFlight);
  ASSERT_TRUE(o.running) << "the ranks did not all reach their first all-reduce within 60 s";
  EXPECT_LT(o.secs_after_signal, 8.0) << "one flight-recorder exchange (2 s at most), not one per operation";
  for (int r : {0, 2}) {
    EXPECT_EQ(o.codes[size_t(r)], 0) << "rank " << r;
    const std::string msg = dir.read(r);
    EXPECT_NE(msg.find("flight recorder: this rank"), std::string::npos) << msg;
    const auto tail = msg.find("\nfailed ");
    ASSERT_NE(tail, std::string::npos) << msg;
    // Some of the round may have completed before the kill; the extra one after it failed.
    EXPECT_NE(msg.find("this group failed before, in allreduce #", tail), std::string::npos) << msg;
    EXPECT_EQ(msg.find("flight recorder: this rank", tail), std::string::npos) << "printed once\n" << msg;
  }
}

TEST_P(FaultTest, StoppedRankTimesOutNamingIt) {
  TempDir dir;
  const Outcome o = inject(dir, 2, /*victim=*/1, SIGSTOP, std::chrono::seconds(3));
  const auto& codes = o.codes;
  const double secs = o.secs_after_signal;
  ASSERT_TRUE(o.running) << "the ranks did not all reach their first all-reduce within 60 s";
  EXPECT_LT(secs, 20.0) << "the survivor should time out after 3 s (a hang is ended at 60 s)";
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
