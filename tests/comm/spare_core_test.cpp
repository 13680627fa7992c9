// ProcessGroup::spare_core(): one decision per group, made at creation from the ranks of the
// group on this host (by host identity, whatever the transport), this rank's CPU affinity and
// the host's CPUs, or forced by NativeOptions::spare_core. The hierarchical all-reduce's
// sub-groups take their parent's answer, and a shared-memory group's thread spins by it.
// Ranks are threads sharing one HashStore; fake host identities come from Options::host_id.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "comm_test_util.h"
#include "lockstep/comm/native_process_group.h"

namespace lockstep::comm {
namespace {

using testing::run_ranks;
using testing::test_options;

NativeProcessGroup& native(ProcessGroup& pg) {
  return dynamic_cast<NativeProcessGroup&>(pg);
}

// Ranks for one host such that they leave no spare core on a host of up to 7 CPUs (more
// ranks than half its CPUs: 2 on 2 CPUs, 3 on 4, 4 on 6 or 7), where a group that counted
// one rank here answered otherwise; at most 4 (threads and shm segments stay small), so a
// larger host checks the same answers without telling the old count apart.
int crowded_ranks() {
  const int cpus = int(std::thread::hardware_concurrency());
  return std::clamp(cpus / 2 + 1, 2, 4);
}

// Every rank's spare_core() and ranks_on_host() for `world` ranks on `hosts` (empty: this
// host's own identity).
struct Answers {
  std::vector<int> spare, here;
};
Answers answers(const std::string& transport, int world,
                const std::vector<std::string>& hosts = {}) {
  Answers a{std::vector<int>(size_t(world), -1), std::vector<int>(size_t(world), -1)};
  run_ranks(world, [&](int rank, store::Store& store) {
    Options o = test_options(transport, "spare_" + transport);
    if (!hosts.empty()) o.host_id = hosts[size_t(rank)];
    auto pg = ProcessGroup::create("native", store, rank, world, o);
    a.spare[size_t(rank)] = pg->spare_core();
    a.here[size_t(rank)] = native(*pg).ranks_on_host();
  });
  return a;
}

// A tcp group (LOCKSTEP_TRANSPORT=tcp) with several ranks on one host shares its CPUs among
// them as a shm group does: it once counted one rank on this host, whatever ran beside it.
TEST(SpareCore, TcpGroupCountsTheRanksOnThisHostLikeShm) {
  const int world = crowded_ranks();
  const Answers tcp = answers("tcp", world), shm = answers("shm", world);
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(tcp.here[size_t(r)], world) << "tcp, rank " << r;
    EXPECT_EQ(shm.here[size_t(r)], world) << "shm, rank " << r;
    EXPECT_EQ(tcp.spare[size_t(r)], shm.spare[size_t(r)])
        << "rank " << r << " of " << world << " on one host of "
        << std::thread::hardware_concurrency()
        << " CPUs: tcp and shm groups disagree on spare_core()";
  }
  // Fake hosts: each rank counts those of its own host only.
  const Answers split = answers("tcp", 3, {"a", "b", "a"});
  EXPECT_EQ(split.here, (std::vector<int>{2, 1, 2}));
}

// The hierarchical all-reduce's sub-groups run beside this host's other ranks: the leaders'
// group (tcp, one rank per host) must not find a spare core because it counts one rank here.
// They take the parent's answer, without writing it into the caller's NativeOptions.
TEST(SpareCore, HierarchySubGroupsTakeTheirParentsAnswer) {
  std::vector<std::string> hosts(size_t(crowded_ranks()), "a");
  hosts.push_back("b");
  const int world = int(hosts.size());
  auto opts = std::make_shared<NativeOptions>();
  run_ranks(world, [&](int rank, store::Store& store) {
    Options o = test_options("auto", "spare_hier");
    o.host_id = hosts[size_t(rank)];
    o.algorithm = "hierarchical";
    o.backend = opts;  // one object shared by every rank, as a caller may
    auto pg = ProcessGroup::create("native", store, rank, world, o);
    const auto subs = native(*pg).hierarchy_groups();
    const bool leader = rank == 0 || rank == world - 1;  // the first rank of each host
    EXPECT_EQ(subs.size(), leader ? 2u : 1u) << "rank " << rank;
    for (size_t i = 0; i < subs.size(); ++i)
      EXPECT_EQ(subs[i]->spare_core(), pg->spare_core())
          << "rank " << rank << ", sub-group " << (i == 0 ? "of its host" : "of the host leaders")
          << " (" << subs[i]->ranks_on_host() << " rank(s) of it here, "
          << native(*pg).ranks_on_host() << " of the parent)";
  });
  EXPECT_EQ(opts->spare_core, -1) << "the caller's NativeOptions were written";
}

// A shm group's thread spins in its waits (while its caller computes) only with a spare core:
// the one decision, forced here either way (it once went by the host's CPUs alone, so one of
// the two answers was wrong on any host). An explicit shm_spin_us still wins.
TEST(SpareCore, ShmGroupThreadSpinsOnlyWithASpareCore) {
  if (std::getenv("LOCKSTEP_SHM_SPIN_US")) GTEST_SKIP() << "LOCKSTEP_SHM_SPIN_US is set";
  for (int spin_us : {-1, 50})
    for (int spare : {-1, 0, 1}) {
      Options o = test_options("shm", "spare_spin");
      auto opts = std::make_shared<NativeOptions>(dynamic_cast<const NativeOptions&>(*o.backend));
      opts->spare_core = spare;
      opts->shm_spin_us = spin_us;
      o.backend = opts;
      run_ranks(2, [&](int rank, store::Store& store) {
        auto pg = ProcessGroup::create("native", store, rank, 2, o);
        if (spare >= 0) {
          EXPECT_EQ(pg->spare_core(), spare == 1);
        }
        const long want = spin_us >= 0 ? spin_us * 1000L : pg->spare_core() ? 300'000L : 0L;
        EXPECT_EQ(native(*pg).shm_async_spin_ns(), want)
            << "rank " << rank << ", spare_core " << spare << ", shm_spin_us " << spin_us;
      });
    }
}

}  // namespace
}  // namespace lockstep::comm
