// The coarse clock: on Clock's time line, never ahead of Clock::now(), and behind it by at
// most a few kernel ticks; Deadline arithmetic on it.
#include "lockstep/core/clock.h"

#include <gtest/gtest.h>

#include <thread>

namespace lockstep {
namespace {

TEST(Clock, CoarseNowIsOnTheSameTimeLineAndAtMostAFewTicksBehind) {
  for (int i = 0; i < 1000; ++i) {
    const auto coarse = coarse_now();
    const auto fine = Clock::now();
    ASSERT_LE(coarse, fine);
    // The tick is 1-4 ms (CONFIG_HZ); 50 ms leaves room for a descheduled test.
    ASSERT_LT(fine - coarse, std::chrono::milliseconds(50));
  }
}

TEST(Clock, DeadlineFromCoarseNowExpiresAfterItsDuration) {
  const Deadline dl(coarse_now() + std::chrono::milliseconds(30));
  EXPECT_FALSE(dl.expired());
  EXPECT_LE(dl.remaining(), std::chrono::milliseconds(30));
  const auto t0 = Clock::now();
  while (!dl.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // Expires at most one kernel tick early (the coarse clock lags; 4-10 ms at HZ 250-100).
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(30) - std::chrono::milliseconds(15));
}

}  // namespace
}  // namespace lockstep
