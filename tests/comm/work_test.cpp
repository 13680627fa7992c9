// WorkState / Work: completion seen without a lock, the first outcome kept, no lost wake-up
// between a completing thread and a blocking waiter, and the helper hook (the waiter runs the
// operation itself) called only while the operation is incomplete.
#include "lockstep/comm/work.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

OpInfo info(uint64_t seq = 0) {
  return {OpKind::allreduce, seq, 0, "g"};
}

TEST(Work, CompletedBeforeTheWaitReturnsAtOnceAndKeepsTheFirstOutcome) {
  auto s = std::make_shared<WorkState>(info());
  EXPECT_FALSE(s->is_completed());
  s->complete(std::make_exception_ptr(std::runtime_error("first")));
  s->complete();  // ignored: the first outcome stays
  s->complete(std::make_exception_ptr(std::runtime_error("third")));
  Work w(s);
  EXPECT_TRUE(w.is_completed());
  EXPECT_TRUE(w.failed());
  try {
    w.wait(std::chrono::seconds(1));
    FAIL() << "wait() must rethrow the operation's error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "first");
  }
}

TEST(Work, WaitTimesOutNamingTheOperation) {
  Work w(std::make_shared<WorkState>(info(7)));
  try {
    w.wait(std::chrono::milliseconds(20));
    FAIL() << "an operation nobody completes must time out";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("allreduce #7"), std::string::npos) << e.what();
  }
}

// A completer racing a waiter that is about to block: each round the waiter must return
// well before its (long) timeout. A lost wake-up shows as a round that takes the timeout.
TEST(Work, NoWakeUpIsLostBetweenCompleterAndBlockingWaiter) {
  constexpr int kRounds = 20000;
  for (int round = 0; round < kRounds; ++round) {
    auto s = std::make_shared<WorkState>(info(uint64_t(round)));
    std::thread completer([s, round] {
      if (round % 3 == 0) std::this_thread::yield();
      s->complete();
    });
    const auto t0 = Clock::now();
    const bool done = s->wait_for(std::chrono::seconds(10));
    completer.join();
    ASSERT_TRUE(done) << "round " << round;
    ASSERT_LT(Clock::now() - t0, std::chrono::seconds(5))
        << "round " << round << ": a lost wake-up";
  }
}

struct Counter {
  std::atomic<int> calls{0};
  Clock::duration last{};
};

TEST(Work, HelperRunsOnlyWhileIncompleteAndGetsTheWaitersTimeout) {
  Counter c;
  auto s = std::make_shared<WorkState>(info());
  s->set_helper(&c, [](void* owner, const WorkState& st, Clock::duration timeout) {
    auto& counter = *static_cast<Counter*>(owner);
    counter.calls.fetch_add(1);
    counter.last = timeout;
    const_cast<WorkState&>(st).complete();  // the waiter "ran" the operation
  });
  Work w(s);
  w.wait(std::chrono::seconds(3));
  EXPECT_EQ(c.calls.load(), 1);
  EXPECT_EQ(c.last, std::chrono::seconds(3));
  w.wait(std::chrono::seconds(3));  // complete: the helper is not called again
  s->help(std::chrono::seconds(3));
  EXPECT_EQ(c.calls.load(), 1);
}

}  // namespace
}  // namespace lockstep::comm
