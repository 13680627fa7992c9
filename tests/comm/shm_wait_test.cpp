// Waiting must not burn a core that another rank needs. A shm wait spins (every rank has a
// core) or yields (more ranks than cores) for well under a millisecond, then sleeps on a
// futex: a rank held up for a second by a late peer uses milliseconds of CPU, not the second.
#include <gtest/gtest.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "comm_test_util.h"
#include "local_ranks.h"

namespace lockstep::comm {
namespace {

double cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

TEST(ShmWait, RanksHeldUpByALatePeerSleep) {
  const int cores = int(std::thread::hardware_concurrency());
  // A core each, then one rank more than cores (the yielding waits), where that is at most 8.
  for (int world : {2, cores + 1}) {
    if (world > 8) continue;
    SCOPED_TRACE(::testing::Message() << world << " ranks, " << cores << " cores");
    const auto codes = local::run_local_ranks(world, std::chrono::seconds(60), [](int rank, int world, store::Store& s) {
      auto pg = ProcessGroup::create("native", s, rank, world, testing::test_options("shm"));
      pg->barrier().wait();  // every rank is set up
      const double cpu0 = cpu_seconds();
      if (rank == 0) std::this_thread::sleep_for(std::chrono::seconds(1));
      pg->barrier().wait();
      const double used = cpu_seconds() - cpu0;
      if (rank != 0 && used > 0.25) {
        std::fprintf(stderr, "rank %d of %d used %.3f s of CPU while it waited 1 s for rank 0\n", rank, world, used);
        return 20;
      }
      return 0;
    });
    for (int r = 0; r < world; ++r) EXPECT_EQ(codes[size_t(r)], 0) << "rank " << r << " (see its stderr above)";
  }
}

}  // namespace
}  // namespace lockstep::comm
