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

#include "lockstep/comm/types.h"
#include "lockstep/core/clock.h"

namespace lockstep::comm {

// Shared between the Work handle(s) and the backend that completes it: the outcome only.
// An engine derives its own task record from it for what its scheduler needs (task.h).
class WorkState {
 public:
  explicit WorkState(OpInfo info) : info_(info) {}
  virtual ~WorkState() = default;
  WorkState(const WorkState&) = delete;
  WorkState& operator=(const WorkState&) = delete;
  void complete(std::exception_ptr error = nullptr);
  // Lock-free: an acquire load (error_ is written once, before done_).
  bool is_completed() const { return done_.load(std::memory_order_acquire); }
  // Blocks until completion or timeout; true when completed.
  bool wait_for(Clock::duration timeout) const;
  std::exception_ptr error() const;
  const OpInfo& info() const { return info_; }
  // Work::wait calls it once, while the operation is incomplete, before blocking for at most
  // `timeout`: an engine may run the operation on the waiting thread (task.h). Default: nothing.
  virtual void before_wait(Clock::duration timeout) const {}

 protected:
  // How many threads are blocked in wait_for (their cores are free: an engine may spin).
  int blocked_waiters() const { return blocked_.load(std::memory_order_relaxed); }

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
  std::exception_ptr error_;
};

// A plain handle, as c10d's Work: completed?, wait (bounded), the stored error.
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

  // A Work that is already complete (world size 1, empty buffers).
  static Work completed(OpInfo info);
  void set_default_timeout(Clock::duration t) { default_timeout_ = t; }

 private:
  std::shared_ptr<WorkState> state_;
  Clock::duration default_timeout_ = std::chrono::seconds(300);
};

}  // namespace lockstep::comm
