// Hierarchical all-reduce (shm inside a host, tcp among one leader per host), with ranks as
// threads that claim host identities through Options::host_id: every dtype, op and count
// against the serial reference, for even, uneven and interleaved host layouts. The
// multi-host case with real network namespaces is tests/comm/netns_hierarchical_test.
#include <gtest/gtest.h>

#include <cstring>

#include "comm_test_util.h"
#include "lockstep/core/error.h"
#include "lockstep/store/hash_store.h"

namespace lockstep::comm {
namespace {

using testing::make_input;
using testing::reference;

struct Layout {
  std::string name;
  std::vector<std::string> hosts;  // by rank
};

class Hierarchical : public ::testing::TestWithParam<Layout> {
 protected:
  // Runs fn on every rank (a thread) of a group whose ranks live on GetParam().hosts.
  void each_rank(const std::string& algorithm, const std::function<void(ProcessGroup&)>& fn) {
    const auto& hosts = GetParam().hosts;
    const int world = int(hosts.size());
    std::vector<std::exception_ptr> errors(hosts.size());
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        try {
          Options o = testing::test_options("auto", "hier");
          o.host_id = hosts[size_t(r)];
          o.algorithm = algorithm;
          auto pg = ProcessGroup::create("native", store_, r, world, o);
          fn(*pg);
        } catch (...) {
          errors[size_t(r)] = std::current_exception();
        }
      });
    for (auto& t : threads) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }
  // True when the leaders' sub-group connected (its tcp address keys are in the store).
  bool leaders_group_made() { return store_.check({"lockstep/pg/hier/leaders/tcp/addr/0"}); }

  store::HashStore store_;
};

TEST_P(Hierarchical, AllreduceEveryDtypeOpAndCount) {
  each_rank("auto", [&](ProcessGroup& pg) {
    for (DType dt : kAllDTypes)
      for (ReduceOp op : kAllReduceOps)
        for (size_t count : {size_t(0), size_t(1), size_t(13), size_t(1027), size_t(70001)}) {
          if (count > 2000 && (op != ReduceOp::sum || (dt != DType::f32 && dt != DType::bf16))) continue;
          auto buf = make_input(pg.rank(), count, dt, op, 1);  // unaligned by one element
          uint8_t* data = buf.data() + dtype_size(dt);
          pg.allreduce(data, count, dt, op).wait();
          for (size_t i = 0; i < count; ++i) {
            double want = reference(pg.size(), i, dt, op), got = load_as_double(data, dt, i);
            ASSERT_NEAR(got, want, testing::tolerance(dt) * std::max(1.0, std::abs(want)))
                << dtype_name(dt) << " " << reduce_op_name(op) << " n=" << count << " element " << i
                << " rank " << pg.rank();
          }
        }
  });
  EXPECT_TRUE(leaders_group_made()) << "auto should pick the hierarchical all-reduce";
}

// Every rank ends with the same bits (the leaders divide avg once; the host broadcasts it).
TEST_P(Hierarchical, ReplicasEndBitwiseEqual) {
  const size_t n = 100003;
  const int world = int(GetParam().hosts.size());
  std::vector<std::vector<float>> out(static_cast<size_t>(world), std::vector<float>(n));
  each_rank("hierarchical", [&](ProcessGroup& pg) {
    auto& v = out[size_t(pg.rank())];
    for (size_t i = 0; i < n; ++i) v[i] = 1.0f / float(1 + (i * 7 + size_t(pg.rank()) * 13) % 97);
    pg.allreduce(v.data(), n, DType::f32, ReduceOp::avg).wait();
  });
  for (int r = 1; r < world; ++r) EXPECT_EQ(0, std::memcmp(out[0].data(), out[size_t(r)].data(), n * 4)) << r;
}

TEST_P(Hierarchical, FlatIsNotHierarchical) {
  each_rank("flat", [&](ProcessGroup& pg) {
    std::vector<int32_t> v(9, pg.rank() + 1);
    pg.allreduce(v.data(), v.size(), DType::i32, ReduceOp::sum).wait();
    EXPECT_EQ(v[8], pg.size() * (pg.size() + 1) / 2);
  });
  EXPECT_FALSE(leaders_group_made());
}

INSTANTIATE_TEST_SUITE_P(
    Native, Hierarchical,
    ::testing::Values(Layout{"two_hosts_of_two", {"a", "a", "b", "b"}},
                      Layout{"three_hosts_of_two", {"a", "a", "b", "b", "c", "c"}},
                      Layout{"uneven_3_1_1", {"a", "a", "a", "b", "c"}},
                      Layout{"interleaved", {"a", "b", "a", "b"}}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace lockstep::comm
