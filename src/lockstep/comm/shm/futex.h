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
  // Sleeps while seq == seen, at most `max_ns`. Spurious returns are fine: callers re-check.
  void sleep(uint32_t seen, long max_ns) {
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    timespec ts{max_ns / 1000000000L, max_ns % 1000000000L};
    ::syscall(SYS_futex, &seq, FUTEX_WAIT, seen, &ts, nullptr, 0);
    sleepers.fetch_sub(1, std::memory_order_seq_cst);
  }
  // Wakes sleepers unconditionally (abort).
  void wake_all() {
    seq.fetch_add(1, std::memory_order_seq_cst);
    ::syscall(SYS_futex, &seq, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
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
