// Shared memory when /dev/shm is small (a container's is often 64 MiB): in a child process
// with its own mount namespace and an 8 MiB tmpfs on /dev/shm (root; skipped otherwise), a
// segment that does not fit is a clear error, not a SIGBUS on first touch, on rank 0 and at
// once on the ranks that wait for it; alloc_shared that does not fit gives ordinary memory
// (every rank alike) and one that fits gives shared memory, and all-reduces in either are
// right. A rank with a /dev/shm of its own cannot open the segment: every rank is told why.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "comm_test_util.h"
#include "local_ranks.h"
#include "lockstep/comm/shm/segment.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

constexpr int kSkip = 77;

// Whether p lies in a mapping of a /dev/shm object (a deleted one: lockstep unlinks them).
bool in_dev_shm(const void* p) {
  std::ifstream maps("/proc/self/maps");
  const auto addr = reinterpret_cast<uintptr_t>(p);
  for (std::string line; std::getline(maps, line);) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2 || addr < lo || addr >= hi) continue;
    return line.find("/dev/shm/lockstep-") != std::string::npos;
  }
  return false;
}

// Runs in the child; returns its exit code (0: all good; kSkip: no namespace; else a failure).
int child() {
  if (::unshare(CLONE_NEWNS) != 0) return kSkip;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return kSkip;
  if (::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=8m") != 0) return kSkip;
  try {
    store::HashStore s;
    shm::ShmSegment seg(s, "too-big/", 0, 1, 16u << 20, std::chrono::seconds(2));
    std::fprintf(stderr, "a 16 MiB segment in an 8 MiB /dev/shm was created\n");
    return 10;
  } catch (const SystemError& e) {
    if (!std::strstr(e.what(), "/dev/shm is too small")) {
      std::fprintf(stderr, "unclear error: %s\n", e.what());
      return 11;
    }
  }
  // Two ranks: the one waiting for rank 0's segment gets rank 0's reason at once, not after
  // its 30 s timeout.
  int rc = 0;
  {
    store::HashStore s;
    std::string errors[2];
    double waited = 0;
    auto make = [&](int rank) {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        shm::ShmSegment seg(s, "too-big-2/", rank, 2, 16u << 20, std::chrono::seconds(30));
      } catch (const SystemError& e) {
        errors[rank] = e.what();
      }
      if (rank == 1) waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    std::thread peer(make, 1);
    make(0);
    peer.join();
    if (errors[0].find("/dev/shm is too small") == std::string::npos ||
        errors[1].find("rank 0 could not create the shared memory") == std::string::npos ||
        errors[1].find("/dev/shm is too small") == std::string::npos || waited > 5) {
      std::fprintf(stderr, "rank 0: '%s'\nrank 1 (after %.1f s): '%s'\n", errors[0].c_str(), waited, errors[1].c_str());
      return 15;
    }
  }
  testing::run_ranks(2, [&](int rank, store::Store& store) {
    auto pg = ProcessGroup::create("native", store, rank, 2, testing::test_options("shm"));
    constexpr size_t kBig = 4u << 20, kSmall = 256u << 10;  // 2 x 4 MiB does not fit; 2 x 256 KiB does
    auto big = pg->alloc_shared(kBig), small = pg->alloc_shared(kSmall);
    if (in_dev_shm(big.get()) || !in_dev_shm(small.get())) {
      std::fprintf(stderr, "rank %d: big in /dev/shm %d, small %d\n", rank, in_dev_shm(big.get()), in_dev_shm(small.get()));
      rc = 12;
    }
    for (auto [mem, bytes] : {std::pair{big.get(), kBig}, std::pair{small.get(), kSmall}}) {
      auto* v = reinterpret_cast<int32_t*>(mem);
      const size_t n = bytes / sizeof(int32_t);
      for (size_t i = 0; i < n; ++i) v[i] = int32_t(rank + 1) * int32_t(i % 7);
      pg->allreduce(v, n, DType::i32, ReduceOp::sum).wait();
      for (size_t i = 0; i < n; ++i)
        if (v[i] != 3 * int32_t(i % 7)) {
          std::fprintf(stderr, "rank %d: element %zu is %d\n", rank, i, v[i]);
          rc = 13;
          break;
        }
    }
  });
  return rc;
}

TEST(ShmSpace, TooSmallDevShmIsAClearErrorOrOrdinaryMemory) {
  // One child process (run_local_ranks forks, bounds and reaps it): the mount namespace must
  // not leak into this test process.
  const int code = local::run_local_ranks(1, std::chrono::seconds(60), [](int, int, store::Store&) {
    return child();
  })[0];
  ASSERT_NE(code, local::kTimedOut) << "the child did not finish within 60 s";
  ASSERT_GE(code, 0) << "the child died of signal " << -code;
  if (code == kSkip) GTEST_SKIP() << "cannot make a mount namespace with a small /dev/shm (needs root)";
  EXPECT_EQ(code, 0) << "see the child's stderr above";
}

// A rank that cannot open rank 0's segment (here: its own /dev/shm, as in a container that
// does not share the host's) fails naming the cause, and rank 0, which waits for every rank
// to map it, fails at once with that rank's reason instead of after its 30 s timeout.
TEST(ShmSpace, RankWithAnotherDevShmIsNamedAtOnce) {
  const auto codes = local::run_local_ranks(2, std::chrono::seconds(60), [](int rank, int, store::Store& s) {
    bool own_shm = false;
    if (rank == 1)
      own_shm = ::unshare(CLONE_NEWNS) == 0 && ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
                ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=8m") == 0;
    s.set(str_cat("own-shm/", rank), own_shm ? "1" : "0");
    const bool skip = store::to_string(s.get("own-shm/1", std::chrono::seconds(30))) != "1";
    const auto t0 = std::chrono::steady_clock::now();
    std::string error;
    try {
      shm::ShmSegment seg(s, "other-shm/", rank, 2, 1u << 20, std::chrono::seconds(30));
    } catch (const SystemError& e) {
      error = e.what();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (skip) return error.empty() ? kSkip : 20;
    const char* want = rank == 1 ? "with the same /dev/shm" : "rank 1: shm_open";
    if (error.find(want) == std::string::npos || secs > 5) {
      std::fprintf(stderr, "rank %d after %.1f s: '%s' (wanted '%s')\n", rank, secs, error.c_str(), want);
      return 21;
    }
    return 0;
  });
  ASSERT_EQ(codes.size(), 2u);
  for (int c : codes) ASSERT_NE(c, local::kTimedOut) << "a rank did not finish within 60 s";
  if (codes[1] == kSkip) GTEST_SKIP() << "cannot make a mount namespace with its own /dev/shm (needs root)";
  EXPECT_EQ(codes[0], 0) << "rank 0: see its stderr above";
  EXPECT_EQ(codes[1], 0) << "rank 1: see its stderr above";
}

}  // namespace
}  // namespace lockstep::comm
