// FutexWord: a 32-bit counter in shared memory that ranks sleep on (FUTEX_WAIT) and ring
// (FUTEX_WAKE), counting sleepers so that a notify with nobody asleep costs no system call.
// Not the private futex variant: the word is shared between processes (and mappings).
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>

namespace lockstep::comm::shm {

struct FutexWord {
  std::atomic<uint32_t> seq{0};
  std::atomic<uint32_t> sleepers{0};

  // Publishes "something changed" and wakes every sleeper, if any.
  void notify() {
    seq.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) != 0)
      ::syscall(SYS_futex, &seq, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
  // Like notify(), but touches seq only when someone sleeps: with nobody asleep it is a fence
  // and a load of a line nobody writes (no cache-line transfer). Correct with Sleeper below,
  // which counts itself before its last check of the condition.
  void notify_sleepers() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) != 0) {
      seq.fetch_add(1, std::memory_order_seq_cst);
      ::syscall(SYS_futex, &seq, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
    }
  }
  // Wakes sleepers unconditionally (abort).
  void wake_all() {
    seq.fetch_add(1, std::memory_order_seq_cst);
    ::syscall(SYS_futex, &seq, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
};

// One sleep on a FutexWord. Counted as a sleeper from construction, so a waker that misses
// the condition's change still sees the count and rings:
//   Sleeper s(word); if (ready()) return; s.sleep(max_ns);
class Sleeper {
 public:
  explicit Sleeper(FutexWord& w) : w_(w) {
    w_.sleepers.fetch_add(1, std::memory_order_seq_cst);
    seen_ = w_.seq.load(std::memory_order_seq_cst);
  }
  ~Sleeper() { w_.sleepers.fetch_sub(1, std::memory_order_seq_cst); }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;
  // Sleeps while seq is unchanged, at most max_ns. Spurious returns are fine: callers re-check.
  void sleep(long max_ns) {
    timespec ts{max_ns / 1000000000L, max_ns % 1000000000L};
    ::syscall(SYS_futex, &w_.seq, FUTEX_WAIT, seen_, &ts, nullptr, 0);
  }

 private:
  FutexWord& w_;
  uint32_t seen_;
};
static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace lockstep::comm::shm
