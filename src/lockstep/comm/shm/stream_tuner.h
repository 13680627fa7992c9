// Chooses, per size class, how all-reduce stores into the shared staging slots: streamed
// (non-temporal, past the caches) or cached (ordinary stores). Which is faster depends on
// where the hypervisor placed the two vCPUs, and changes while a job runs: on this project's
// 2-vCPU VM a 1 MiB all-reduce measured 15.6 GB/s streamed against 12.4 cached, and twenty
// minutes earlier on the same VM 10.9 against 21.9. So each rank measures instead of guessing:
// the first operations of a class try the two modes in runs of kRun, then the faster (by the
// median seconds per byte of its last kSamples operations) is used, and every kPeriod
// operations the other one is probed kProbes times, so that a change of placement is
// noticed. The first kSkip
// operations after a change of mode are not measured (they pay for the other mode's cache
// state: with one skipped, a 256 KiB probe measured 2.5 GB/s streamed against 12-13 when
// streaming throughout, and the tuner kept the slower mode). All ranks see the same sequence
// of operations, so their probes coincide; and with share() they all follow one rank's
// choice (each deciding alone, two ranks were seen to settle on different modes). Not
// thread-safe: one per ShmGroup, used by the thread that runs its collectives.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>

#include "lockstep/core/clock.h"

namespace lockstep::comm::shm {

class StreamTuner {
 public:
  enum class Mode { kAuto, kAlways, kNever };
  static constexpr size_t kMinBytes = 256 << 10;  // smaller: streaming is off (memcpy in cache)
  static constexpr uint64_t kRun = 6, kExplore = 4 * kRun, kPeriod = 256, kProbes = 8, kSkip = 2;
  static constexpr int kClasses = 8;  // 256 KiB, 512 KiB, ... 16 MiB, >= 32 MiB
  // Each mode's estimate is the median of its last kSamples measured operations: one slow
  // outlier (a timer tick, a descheduled peer: 2-8x the usual time, every few dozen
  // operations) moved a running average for a long time, and hit the probed mode, with few
  // samples, hardest.
  static constexpr int kSamples = 8;

  explicit StreamTuner(Mode mode = Mode::kAuto) : mode_(mode) {}

  // The choice per size class lives in `table` (kClasses bytes every rank sees; 0 = none
  // yet, 1 = cached, 2 = streamed): the leader writes its choice there, and after exploring
  // every rank follows it.
  void share(std::atomic<uint8_t>* table, bool leader) {
    table_ = table;
    leader_ = leader;
  }

  struct Trial {
    int cls = -1;  // -1: not measured
    bool stream = false;
  };

  // The store mode of the next operation moving `bytes` per rank.
  Trial begin(size_t bytes) {
    if (bytes < kMinBytes || mode_ == Mode::kNever) return {-1, false};
    if (mode_ == Mode::kAlways) return {-1, true};
    const int c = size_class(bytes);
    Class& k = classes_[size_t(c)];
    const uint64_t i = k.ops++;
    bool stream, first;
    if (i < kExplore) {  // runs of kRun: streamed, cached, streamed, cached
      stream = (i / kRun) % 2 == 0;
      first = i % kRun < kSkip;
    } else {
      const uint64_t p = (i - kExplore) % kPeriod;
      const bool probe = p >= kPeriod - kProbes;
      const bool best = best_stream(c);
      stream = probe ? !best : best;
      first = p < kSkip || (p >= kPeriod - kProbes && p < kPeriod - kProbes + kSkip);
    }
    return {first ? -1 : c, stream};
  }

  // The operation begun with `t` took `seconds` for `bytes`.
  void end(const Trial& t, size_t bytes, double seconds) {
    if (t.cls < 0 || bytes == 0) return;
    Class& k = classes_[size_t(t.cls)];
    const int m = t.stream ? 1 : 0;
    k.last[size_t(m)][k.seen[size_t(m)]++ % kSamples] = seconds / double(bytes);
    std::array<double, kSamples> v = k.last[size_t(m)];
    const auto n = std::min<uint64_t>(k.seen[size_t(m)], kSamples);
    std::nth_element(v.begin(), v.begin() + long(n / 2), v.begin() + long(n));
    k.sec_per_byte[size_t(m)] = v[n / 2];
    if (k.sec_per_byte[0] >= 0 && k.sec_per_byte[1] >= 0) {
      k.best_stream = k.sec_per_byte[1] <= k.sec_per_byte[0];
      if (table_ && leader_) table_[t.cls].store(k.best_stream ? 2 : 1, std::memory_order_relaxed);
    }
  }

  // The mode the class of `bytes` currently prefers (for the copies that are not measured:
  // broadcast, all-gather, reduce-scatter).
  bool preferred(size_t bytes) const {
    if (bytes < kMinBytes || mode_ == Mode::kNever) return false;
    if (mode_ == Mode::kAlways) return true;
    return best_stream(size_class(bytes));
  }

  // Seconds per byte of each mode in the class of `bytes` (-1: not measured yet).
  std::array<double, 2> estimate(size_t bytes) const {
    return classes_[size_t(size_class(bytes))].sec_per_byte;  // [cached, streamed]
  }

 private:
  static int size_class(size_t bytes) {
    const int c = int(std::bit_width(bytes)) - 1 - 18;  // floor(log2(bytes)) - log2(256 KiB)
    return c < 0 ? 0 : c >= kClasses ? kClasses - 1 : c;
  }
  struct Class {
    uint64_t ops = 0;
    std::array<std::array<double, kSamples>, 2> last{};  // per mode, a ring of samples
    std::array<uint64_t, 2> seen{0, 0};
    std::array<double, 2> sec_per_byte{-1, -1};  // per mode, the median of `last`
    bool best_stream = true;
  };
  bool best_stream(int c) const {
    const uint8_t shared = table_ ? table_[c].load(std::memory_order_relaxed) : 0;
    return shared ? shared == 2 : classes_[size_t(c)].best_stream;
  }
  Mode mode_;
  std::array<Class, kClasses> classes_{};
  std::atomic<uint8_t>* table_ = nullptr;
  bool leader_ = false;
};

// One operation measured for a tuner, as a scope: begins the trial when made (stream() is how
// to store), ends it with the seconds since then when the scope is left. A scope left by an
// exception is not measured (a failed operation's time says nothing about the store mode).
class TimedTrial {
 public:
  TimedTrial(StreamTuner& tuner, size_t bytes)
      : tuner_(tuner), bytes_(bytes), trial_(tuner.begin(bytes)), started_(Clock::now()) {}
  ~TimedTrial() {
    if (std::uncaught_exceptions() > unwinding_) return;
    tuner_.end(trial_, bytes_, std::chrono::duration<double>(Clock::now() - started_).count());
  }
  TimedTrial(const TimedTrial&) = delete;
  TimedTrial& operator=(const TimedTrial&) = delete;
  bool stream() const { return trial_.stream; }

 private:
  StreamTuner& tuner_;
  const size_t bytes_;
  const StreamTuner::Trial trial_;
  const Clock::time_point started_;
  const int unwinding_ = std::uncaught_exceptions();  // those already in flight when made
};

}  // namespace lockstep::comm::shm
