// Chooses, per size class, how all-reduce stores into the shared staging slots: streamed
// (non-temporal, past the caches) or cached (ordinary stores). Which is faster depends on
// where the hypervisor placed the two vCPUs, and changes while a job runs: on this project's
// 2-vCPU VM a 1 MiB all-reduce measured 15.6 GB/s streamed against 12.4 cached, and twenty
// minutes earlier on the same VM 10.9 against 21.9. So each rank measures instead of guessing:
// the first operations of a class try the two modes in runs of kRun, then the faster (by a
// running average of seconds per byte) is used, and every kPeriod operations the other one
// is probed kProbes times, so that a change of placement is noticed. The first operation
// after a change of mode is not measured (it pays for the other mode's cache state). All
// ranks see the same sequence of operations, so their probes coincide. Not thread-safe: one
// per ShmGroup, used by the thread that runs its collectives.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace lockstep::comm::shm {

class StreamTuner {
 public:
  enum class Mode { kAuto, kAlways, kNever };
  static constexpr size_t kMinBytes = 256 << 10;  // smaller: streaming is off (memcpy in cache)
  static constexpr uint64_t kRun = 4, kExplore = 4 * kRun, kPeriod = 128, kProbes = 4;
  static constexpr double kAlpha = 0.3;  // weight of a new sample in the running average

  explicit StreamTuner(Mode mode = Mode::kAuto) : mode_(mode) {}

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
      first = i % kRun == 0;
    } else {
      const uint64_t p = (i - kExplore) % kPeriod;
      const bool probe = p >= kPeriod - kProbes;
      stream = probe ? !k.best_stream : k.best_stream;
      first = p == 0 || p == kPeriod - kProbes;
    }
    return {first ? -1 : c, stream};
  }

  // The operation begun with `t` took `seconds` for `bytes`.
  void end(const Trial& t, size_t bytes, double seconds) {
    if (t.cls < 0 || bytes == 0) return;
    Class& k = classes_[size_t(t.cls)];
    double& avg = k.sec_per_byte[t.stream ? 1 : 0];
    const double x = seconds / double(bytes);
    avg = avg < 0 ? x : (1 - kAlpha) * avg + kAlpha * x;
    if (k.sec_per_byte[0] >= 0 && k.sec_per_byte[1] >= 0)
      k.best_stream = k.sec_per_byte[1] <= k.sec_per_byte[0];
  }

  // The mode the class of `bytes` currently prefers (for the copies that are not measured:
  // broadcast, all-gather, reduce-scatter).
  bool preferred(size_t bytes) const {
    if (bytes < kMinBytes || mode_ == Mode::kNever) return false;
    if (mode_ == Mode::kAlways) return true;
    return classes_[size_t(size_class(bytes))].best_stream;
  }

  // Seconds per byte of each mode in the class of `bytes` (-1: not measured yet).
  std::array<double, 2> estimate(size_t bytes) const {
    return classes_[size_t(size_class(bytes))].sec_per_byte;  // [cached, streamed]
  }

 private:
  static constexpr int kClasses = 8;  // 256 KiB, 512 KiB, ... 16 MiB, >= 32 MiB
  static int size_class(size_t bytes) {
    const int c = int(std::bit_width(bytes)) - 1 - 18;  // floor(log2(bytes)) - log2(256 KiB)
    return c < 0 ? 0 : c >= kClasses ? kClasses - 1 : c;
  }
  struct Class {
    uint64_t ops = 0;
    std::array<double, 2> sec_per_byte{-1, -1};
    bool best_stream = true;
  };
  Mode mode_;
  std::array<Class, kClasses> classes_{};
};

}  // namespace lockstep::comm::shm
