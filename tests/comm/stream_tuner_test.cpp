// The shared-memory store-mode tuner: explores both modes, settles on the faster, probes the
// other periodically and follows a change; classes by size are independent.
#include <gtest/gtest.h>

#include <stdexcept>

#include "lockstep/comm/shm/stream_tuner.h"

namespace lockstep::comm::shm {
namespace {

constexpr size_t kMiB = 1 << 20;

// Runs `ops` operations of `bytes` where streamed ones take stream_s and cached ones cached_s
// seconds; returns how many were streamed.
int simulate(StreamTuner& t, size_t bytes, int ops, double stream_s, double cached_s) {
  int streamed = 0;
  for (int i = 0; i < ops; ++i) {
    const auto trial = t.begin(bytes);
    streamed += trial.stream;
    t.end(trial, bytes, trial.stream ? stream_s : cached_s);
  }
  return streamed;
}

TEST(StreamTuner, SettlesOnTheFasterModeAndProbesTheOther) {
  StreamTuner t;
  // Exploration: runs of kRun streamed, cached, streamed, cached.
  for (int i = 0; i < int(StreamTuner::kExplore); ++i) {
    const auto trial = t.begin(kMiB);
    EXPECT_EQ(trial.stream, (i / int(StreamTuner::kRun)) % 2 == 0) << i;
    // The first kSkip of a run pay for the mode change: not measured (else cached would look slow).
    EXPECT_EQ(trial.cls < 0, i % int(StreamTuner::kRun) < int(StreamTuner::kSkip)) << i;
    t.end(trial, kMiB, trial.cls < 0 ? 1.0 : trial.stream ? 2e-4 : 1e-4);  // cached twice as fast
  }
  EXPECT_FALSE(t.preferred(kMiB));
  // Then cached, except kProbes streamed probes per kPeriod.
  const int ops = int(StreamTuner::kPeriod) * 4;
  EXPECT_EQ(simulate(t, kMiB, ops, 2e-4, 1e-4), 4 * int(StreamTuner::kProbes));
  // The machine changes: streaming becomes 3x faster; the probes notice and it switches.
  simulate(t, kMiB, int(StreamTuner::kPeriod) * 2, 0.5e-4, 1.5e-4);
  EXPECT_TRUE(t.preferred(kMiB));
  EXPECT_EQ(simulate(t, kMiB, ops, 0.5e-4, 1.5e-4), ops - 4 * int(StreamTuner::kProbes));
  const auto est = t.estimate(kMiB);
  EXPECT_LT(est[1], est[0]);
}

TEST(StreamTuner, SizeClassesAreIndependentAndSmallCopiesAreNotStreamed) {
  StreamTuner t;
  simulate(t, kMiB, 64, 2e-4, 1e-4);          // 1 MiB: cached wins
  simulate(t, 8 * kMiB, 64, 0.8e-3, 1.6e-3);  // 8 MiB: streamed wins
  EXPECT_FALSE(t.preferred(kMiB));
  EXPECT_FALSE(t.preferred(kMiB + kMiB / 2));  // same class as 1 MiB
  EXPECT_TRUE(t.preferred(8 * kMiB));
  EXPECT_FALSE(t.begin(StreamTuner::kMinBytes - 1).stream);
  EXPECT_FALSE(t.preferred(64 << 10));
}

// A slow outlier now and then (a timer tick, a descheduled peer) must not decide. Cached
// stores are faster at first; then streaming becomes faster, and the first two measured
// probes of every window take 8x as long: the probes must still notice the change (a
// running average never did).
TEST(StreamTuner, OutliersDoNotDecide) {
  constexpr uint64_t kFirstMeasuredProbe = StreamTuner::kPeriod - StreamTuner::kProbes + StreamTuner::kSkip;
  StreamTuner t;
  simulate(t, kMiB, int(StreamTuner::kExplore + 2 * StreamTuner::kPeriod), 2e-4, 1e-4);
  ASSERT_FALSE(t.preferred(kMiB));
  const uint64_t explored = StreamTuner::kExplore + 2 * StreamTuner::kPeriod;
  for (uint64_t i = explored; i < explored + 8 * StreamTuner::kPeriod; ++i) {
    const auto trial = t.begin(kMiB);
    const uint64_t p = (i - StreamTuner::kExplore) % StreamTuner::kPeriod;
    const double s = trial.stream ? 1e-4 : 1.5e-4;
    const bool outlier = p == kFirstMeasuredProbe || p == kFirstMeasuredProbe + 1;
    t.end(trial, kMiB, outlier ? 8 * s : s);
  }
  EXPECT_TRUE(t.preferred(kMiB));
}

// With a shared table every rank follows the leader's choice, whatever its own timings say
// (ranks deciding alone were seen on different modes), and probes at the same operations.
TEST(StreamTuner, FollowersUseTheLeadersChoice) {
  std::atomic<uint8_t> table[StreamTuner::kClasses] = {};
  StreamTuner leader, follower;
  leader.share(table, true);
  follower.share(table, false);
  const int ops = int(StreamTuner::kExplore + StreamTuner::kPeriod * 3);
  int same = 0;
  for (int i = 0; i < ops; ++i) {
    const auto a = leader.begin(kMiB), b = follower.begin(kMiB);
    same += a.stream == b.stream;
    leader.end(a, kMiB, a.stream ? 1e-4 : 2e-4);    // the leader finds streaming faster,
    follower.end(b, kMiB, b.stream ? 2e-4 : 1e-4);  // the follower the opposite
  }
  EXPECT_EQ(same, ops);
  EXPECT_TRUE(leader.preferred(kMiB));
  EXPECT_TRUE(follower.preferred(kMiB));
  EXPECT_EQ(table[1].load(), 0);  // other classes: not chosen yet
  StreamTuner alone;
  simulate(alone, kMiB, ops, 2e-4, 1e-4);
  EXPECT_FALSE(alone.preferred(kMiB));
}

TEST(StreamTuner, FixedModesDoNotMeasure) {
  StreamTuner on(StreamTuner::Mode::kAlways), off(StreamTuner::Mode::kNever);
  EXPECT_EQ(simulate(on, kMiB, 50, 1.0, 1e-9), 50);
  EXPECT_EQ(simulate(off, kMiB, 50, 1e-9, 1.0), 0);
  EXPECT_TRUE(on.preferred(kMiB));
  EXPECT_FALSE(off.preferred(kMiB));
  EXPECT_EQ(on.estimate(kMiB)[0], -1);
}

// TimedTrial measures one operation as a scope, with the mode its trial chose; a scope left
// by an exception (a failed operation) is not measured, one made while another exception
// unwinds (an operation in a destructor) and left normally is.
TEST(StreamTuner, TimedTrialMeasuresItsScopeUnlessAnExceptionLeavesIt) {
  StreamTuner t;
  for (uint64_t i = 0; i < StreamTuner::kSkip; ++i) {
    const TimedTrial trial(t, kMiB);  // streamed, the first kSkip of the run: not measured
    EXPECT_TRUE(trial.stream());
  }
  try {
    const TimedTrial trial(t, kMiB);
    throw std::runtime_error("a peer died");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(t.estimate(kMiB)[1], -1) << "the failed operation was measured";
  struct InDestructor {
    StreamTuner& t;
    ~InDestructor() { const TimedTrial trial(t, kMiB); }
  };
  try {
    InDestructor d{t};
    throw std::runtime_error("unwinds through d");
  } catch (const std::runtime_error&) {
  }
  EXPECT_GE(t.estimate(kMiB)[1], 0) << "the operation in a destructor was not measured";
  EXPECT_EQ(t.estimate(kMiB)[0], -1);
}

}  // namespace
}  // namespace lockstep::comm::shm
