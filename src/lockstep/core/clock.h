// Time: a monotonic clock and Deadline, the currency of every blocking call in lockstep.
//
//   auto dl = Deadline::after(std::chrono::seconds(30));
//   while (!ready()) { if (dl.expired()) LOCKSTEP_THROW(TimeoutError, ...); wait(dl.remaining()); }
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace lockstep {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

class Deadline {
 public:
  // A duration past what the clock can hold from now (Clock::duration::max(), a wait "for
  // ever") is never(), not an overflowed time in the past.
  static Deadline after(Clock::duration d) {
    const auto now = Clock::now();
    return d < Clock::time_point::max() - now ? Deadline(now + d) : never();
  }
  static Deadline never() { return Deadline(Clock::time_point::max()); }
  explicit Deadline(Clock::time_point at) : at_(at) {}

  bool is_never() const { return at_ == Clock::time_point::max(); }
  bool expired() const { return !is_never() && Clock::now() >= at_; }
  Clock::time_point at() const { return at_; }
  // Time left, clamped at zero; a very large value for never().
  Clock::duration remaining() const {
    if (is_never()) return std::chrono::hours(24 * 365);
    auto left = at_ - Clock::now();
    return left.count() > 0 ? left : Clock::duration::zero();
  }
  // Milliseconds left for poll()/epoll_wait(): -1 for never, rounded up otherwise.
  int poll_timeout_ms() const {
    if (is_never()) return -1;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(remaining()).count();
    auto ms = (us + 999) / 1000;
    return ms > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max()
                                                : static_cast<int>(ms);
  }

 private:
  Clock::time_point at_;
};

// Clock::now() at the kernel tick's resolution (1-4 ms; never ahead of Clock::now()), read
// from a variable the kernel updates instead of the clock source: about 4 ns against 25-30 ns
// for Clock::now() under kvm-clock. For deadlines of seconds and flight records on paths
// where a small collective's every nanosecond counts.
inline Clock::time_point coarse_now() {
  static_assert(std::is_same_v<Clock, std::chrono::steady_clock>);  // CLOCK_MONOTONIC's epoch
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Microseconds since an arbitrary fixed origin (for timelines and flight records).
inline int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
      .count();
}

}  // namespace lockstep
