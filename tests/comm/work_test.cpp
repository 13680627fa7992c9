// WorkState / Work: completion seen without a lock, the first outcome kept, no lost wake-up
// between a completing thread and a blocking waiter, and the helper hook (the waiter runs the
// operation itself) called only while the operation is incomplete.
#include "lockstep/comm/work.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

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
// One completer thread serves every round (a thread per round spent most of the test starting
// threads, and under ASan took 20 s); it is released just as the waiter goes to wait, after a
// delay that varies by round, so completion lands before, during and after the waiter's way
// into its sleep.
TEST(Work, NoWakeUpIsLostBetweenCompleterAndBlockingWaiter) {
  constexpr int kRounds = 20000;
  std::vector<std::shared_ptr<WorkState>> states;
  for (int round = 0; round < kRounds; ++round) states.push_back(std::make_shared<WorkState>(info(uint64_t(round))));
  std::atomic<int> released{-1};
  std::thread completer([&] {
    for (int round = 0; round < kRounds; ++round) {
      while (released.load(std::memory_order_acquire) < round) std::this_thread::yield();
      for (volatile int i = 0; i < (round % 4) * 100; i = i + 1) {
      }
      states[size_t(round)]->complete();
    }
  });
  int lost = -1;
  for (int round = 0; round < kRounds && lost < 0; ++round) {
    const auto t0 = Clock::now();
    released.store(round, std::memory_order_release);
    const bool done = states[size_t(round)]->wait_for(std::chrono::seconds(10));
    if (!done || Clock::now() - t0 > std::chrono::seconds(5)) lost = round;
  }
  released.store(kRounds, std::memory_order_release);  // lets the completer finish after a failure
  completer.join();
  EXPECT_EQ(lost, -1) << "round " << lost << ": a lost wake-up (the wait took the timeout)";
}

// An engine's task record (task.h) runs the operation on the waiting thread from before_wait.
struct InlineTask : WorkState {
  explicit InlineTask(OpInfo i) : WorkState(i) {}
  mutable std::atomic<int> calls{0};
  mutable Clock::duration last{};
  void before_wait(Clock::duration timeout) const override {
    calls.fetch_add(1);
    last = timeout;
    const_cast<InlineTask*>(this)->complete();  // the waiter "ran" the operation
  }
};

TEST(Work, WaitLetsTheTaskRunInlineOnceWithTheWaitersTimeout) {
  auto s = std::make_shared<InlineTask>(info());
  Work w(s);
  w.wait(std::chrono::seconds(3));
  EXPECT_EQ(s->calls.load(), 1);
  EXPECT_EQ(s->last, std::chrono::seconds(3));
  w.wait(std::chrono::seconds(3));  // complete: not called again
  EXPECT_EQ(s->calls.load(), 1);
}

}  // namespace
}  // namespace lockstep::comm
