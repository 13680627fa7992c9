// The coarse clock: on Clock's time line, never ahead of Clock::now(), and behind it by at
// most a few kernel ticks; Deadline arithmetic on it.
#include "lockstep/core/clock.h"

#include <gtest/gtest.h>

#include <thread>

namespace lockstep {
namespace {

TEST(Clock, CoarseNowIsOnTheSameTimeLineAndAtMostAFewTicksBehind) {
  for (int i = 0; i < 1000; ++i) {
    const auto before = Clock::now();
    const auto coarse = coarse_now();
    const auto fine = Clock::now();
    ASSERT_LE(coarse, fine);
    // The coarse clock lags the time it is read at by at most a tick (1-10 ms, CONFIG_HZ),
    // and it is read after `before`, so it lags `before` by at most a tick too, however long
    // the test is descheduled in between; 50 ms is a bound, not a measurement.
    ASSERT_LT(before - coarse, std::chrono::milliseconds(50));
  }
}

TEST(Clock, DeadlineFromCoarseNowExpiresAfterItsDuration) {
  // t0 before the deadline's start: a test descheduled in between cannot shorten the wait
  // measured from t0. 300 ms: a deadline that expired before the next line would need the
  // test to be descheduled that long.
  const auto t0 = Clock::now();
  const Deadline dl(coarse_now() + std::chrono::milliseconds(300));
  EXPECT_FALSE(dl.expired());
  EXPECT_LE(dl.remaining(), std::chrono::milliseconds(300));
  while (!dl.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // Expires at most one kernel tick early (the coarse clock lags; 4-10 ms at HZ 250-100).
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(300) - std::chrono::milliseconds(15));
}

// A wait "for ever" (Clock::duration::max()) is never(); now + max used to overflow into a
// time long past, which expired at once.
TEST(Clock, DeadlineAfterTheLongestDurationIsNever) {
  const Deadline forever = Deadline::after(Clock::duration::max());
  EXPECT_TRUE(forever.is_never());
  EXPECT_FALSE(forever.expired());
  const Deadline soon = Deadline::after(std::chrono::hours(1));
  EXPECT_FALSE(soon.is_never());
  EXPECT_GT(soon.remaining(), std::chrono::minutes(59));
}

}  // namespace
}  // namespace lockstep
