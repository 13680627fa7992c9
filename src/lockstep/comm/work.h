// Work: the handle every collective returns at once. The backend thread completes it later;
// wait() blocks (bounded) until then and rethrows the operation's error, if any.
//
//   auto w = pg->allreduce(grad.data(), n, DType::f32, ReduceOp::sum);
//   ... compute ...
//   w.wait(std::chrono::seconds(60));     // throws PeerError / TimeoutError / AbortedError
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>

#include "lockstep/comm/types.h"
#include "lockstep/core/clock.h"

namespace lockstep::comm {

// Shared between the Work handle(s) and the backend thread that completes it.
class WorkState {
 public:
  explicit WorkState(OpInfo info) : info_(info) {}
  void complete(std::exception_ptr error = nullptr);
  // Lock-free: an acquire load (error_ is written once, before done_).
  bool is_completed() const { return done_.load(std::memory_order_acquire); }
  // Blocks until completion or timeout; true when completed.
  bool wait_for(Clock::duration timeout) const;
  std::exception_ptr error() const;
  const OpInfo& info() const { return info_; }
  // Whether some thread is blocked in wait_for (its core is free: a backend may spin).
  bool has_blocked_waiter() const { return blocked_.load(std::memory_order_relaxed) > 0; }
  // A backend may let the waiting thread run the operation itself when its own thread is
  // idle (saves two thread hand-offs on small messages); wait() calls help() first, and only
  // while the operation is incomplete. `fn` gets `owner` (the backend), this state and the
  // waiter's timeout, and declines when it could overrun that timeout. The backend must
  // complete every operation before it goes away (so an incomplete one proves it is alive).
  // Set before the state is shared.
  using HelpFn = void (*)(void* owner, const WorkState& state, Clock::duration timeout);
  void set_helper(void* owner, HelpFn fn) {
    helper_owner_ = owner;
    helper_fn_ = fn;
  }
  void help(Clock::duration timeout) const {
    if (helper_fn_ && !is_completed()) helper_fn_(helper_owner_, *this, timeout);
  }
  // Set by a backend before complete() when it checked the result for NaN/Inf
  // (ProcessGroup::allreduce_check_finite).
  void set_nonfinite(bool any) { nonfinite_.store(any ? 1 : 0, std::memory_order_relaxed); }
  int nonfinite() const { return nonfinite_.load(std::memory_order_relaxed); }  // -1: unchecked
  // Set by a backend before complete() when the waiting thread ran the operation itself.
  void set_ran_on_waiter() { ran_on_waiter_.store(true, std::memory_order_relaxed); }
  bool ran_on_waiter() const { return ran_on_waiter_.load(std::memory_order_relaxed); }

 private:
  OpInfo info_;
  // A small operation is usually complete before anyone waits (its waiter ran it): then no
  // lock is taken at all. The mutex and condition variable only serve waiters that block:
  // complete() publishes done_ and then reads blocked_, a waiter counts itself in blocked_ and
  // then reads done_ (both sequentially consistent), so one of them sees the other.
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable std::atomic<int> blocked_{0};  // waiters inside wait_for
  std::atomic<bool> claimed_{false};     // complete() was called (the first outcome stays)
  std::atomic<bool> done_{false};
  std::atomic<bool> ran_on_waiter_{false};
  std::atomic<int8_t> nonfinite_{-1};
  std::exception_ptr error_;
  void* helper_owner_ = nullptr;
  HelpFn helper_fn_ = nullptr;
};

class Work {
 public:
  Work() = default;
  explicit Work(std::shared_ptr<WorkState> state) : state_(std::move(state)) {}

  // Waits until the operation finished; rethrows its error. Throws TimeoutError (naming the
  // operation and its sequence number) if it has not finished within `timeout`.
  void wait(Clock::duration timeout) const;
  // Waits with the group's default timeout (the one given at creation).
  void wait() const;
  bool is_completed() const;
  // The stored error (null while running or on success).
  std::exception_ptr error() const;
  // True if the operation completed with an error.
  bool failed() const { return is_completed() && error() != nullptr; }
  const OpInfo& info() const;
  bool valid() const { return state_ != nullptr; }
  // Diagnostics: whether the thread that waited ran the operation (no hand-off to the
  // backend's thread). Meaningful once completed.
  bool ran_on_waiter() const { return state_ && state_->ran_on_waiter(); }
  // Whether the result holds a NaN or an Inf, when the backend checked it (see
  // ProcessGroup::allreduce_check_finite); empty otherwise, or until completed successfully.
  std::optional<bool> nonfinite() const;

  // A Work that is already complete (world size 1, empty buffers).
  static Work completed(OpInfo info);
  void set_default_timeout(Clock::duration t) { default_timeout_ = t; }

 private:
  std::shared_ptr<WorkState> state_;
  Clock::duration default_timeout_ = std::chrono::seconds(300);
};

}  // namespace lockstep::comm
