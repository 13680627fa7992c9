// Every row of the algorithm table (src/lockstep/comm/algorithms/table.cpp), forced in turn,
// on 2, 3 and 4 ranks, over counts from 0 elements to several MiB and every dtype its path
// takes, checked element by element against a serial reference; each operation also asserts
// that the forced row is the one that ran. A new row is walked without a new test. Ranks are
// threads: shm rows run on ShmGroups sharing one HashStore (alloc_shared memory is a segment
// each rank maps); pair rows on TcpTransports over loopback.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "comm_test_util.h"
#include "lockstep/comm/algorithms.h"
#include "lockstep/comm/algorithms/table.h"
#include "lockstep/comm/shm/segment.h"
#include "lockstep/comm/shm/shm_group.h"
#include "lockstep/comm/tcp/tcp_transport.h"
#include "lockstep/core/buffer.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

using algo::Collective;
using algo::Row;
using testing::make_input;
using testing::reference;
using testing::run_ranks;

constexpr size_t kSlotBytes = 64 << 10;  // small staging rounds: several MiB take many
constexpr size_t kBigBytes = (3 << 20) + 40;
constexpr Millis kTimeout = std::chrono::seconds(60);

struct Case {
  const Row* row;
  int world;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.row->name << " on " << c.world << " ranks";
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const Row& r : algo::rows())
    for (int w : {2, 3, 4}) all.push_back({&r, w});
  return all;
}

// The bytes the table chooses by for `count` elements (this rank's input).
size_t input_bytes(Collective c, size_t count, DType dt, int world) {
  return (c == Collective::reduce_scatter ? size_t(world) : 1) * count * dtype_size(dt);
}

// Counts to walk: 0, 1, odd ones, the largest the row can run (its boundary) and, where it can,
// several MiB (f32 only: the large case is about rounds, not dtypes).
std::vector<size_t> counts_for(const Row& row, const algo::Facts& f, DType dt) {
  const algo::Range can = row.can(f);
  const size_t per = input_bytes(row.collective, 1, dt, f.world);
  std::vector<size_t> out;
  std::vector<size_t> want = {0, 1, 13, 1027};
  if (can.hi != SIZE_MAX) want.push_back(can.hi / per);
  if (dt == DType::f32) want.push_back(kBigBytes / per + 7);
  for (size_t n : want)
    if (can.contains(n * per) && std::find(out.begin(), out.end(), n) == out.end())
      out.push_back(n);
  return out;
}

// sum for every dtype; a second op for one float and one integer dtype (the kernels' other
// paths are reduce_kernels_test's): keeps the walk to seconds under ASan.
std::vector<ReduceOp> ops_for(DType dt, ReduceOp second) {
  if (dt == DType::f32 || dt == DType::i32) return {ReduceOp::sum, second};
  return {ReduceOp::sum};
}

void expect_near(double got, double want, DType dt, const std::string& what) {
  ASSERT_NEAR(got, want, testing::tolerance(dt) * std::max(1.0, std::abs(want))) << what;
}

// One collective of `row` on this rank, its result checked. `mem` is this rank's block of the
// stand-in shared allocation when the row reads shared blocks (else ordinary memory).
void walk_shm_op(shm::ShmGroup& g, const Row& row, size_t count, DType dt, ReduceOp op,
                 std::byte* block) {
  const int me = g.rank(), P = g.world();
  const size_t es = dtype_size(dt),
               n_in = row.collective == Collective::reduce_scatter ? P * count : count;
  const std::string what =
      str_cat(row.name, " P=", P, " ", dtype_name(dt), " ", reduce_op_name(op), " n=", count);
  std::vector<uint8_t> in = make_input(me, n_in, dt, op);
  uint8_t* data = in.data();
  if (row.shared_only) {  // the input inside this rank's block, one element in
    data = reinterpret_cast<uint8_t*>(block) + es;
    std::memcpy(data, in.data(), n_in * es);
  }
  const OpInfo info{OpKind::allreduce, 1, me, "walk"};
  const Deadline dl = Deadline::after(kTimeout);
  std::vector<uint8_t> out(std::max<size_t>(1, size_t(P) * count * es));
  switch (row.collective) {
    case Collective::allreduce:
    case Collective::reduce:
      if (row.collective == Collective::allreduce)
        g.allreduce(data, count, dt, op, info, dl);
      else
        g.reduce(data, count, dt, op, 0, info, dl);
      if (row.collective == Collective::reduce && me != 0) break;
      for (size_t i = 0; i < count; ++i)
        expect_near(load_as_double(data, dt, i), reference(P, i, dt, op), dt, what);
      break;
    case Collective::broadcast: {
      const int root = P - 1;
      g.broadcast(data, count * es, root, info, dl);
      const auto want = make_input(root, count, dt, op);
      ASSERT_EQ(std::memcmp(data, want.data(), count * es), 0) << what;
      break;
    }
    case Collective::allgather:
      g.allgather(data, out.data(), count * es, info, dl);
      for (int r = 0; r < P; ++r) {
        const auto want = make_input(r, count, dt, op);
        ASSERT_EQ(std::memcmp(out.data() + size_t(r) * count * es, want.data(), count * es), 0)
            << what << " rank " << r;
      }
      break;
    case Collective::reduce_scatter:
      g.reduce_scatter(data, out.data(), count, dt, op, info, dl);
      for (size_t i = 0; i < count; ++i)
        expect_near(load_as_double(out.data(), dt, i), reference(P, size_t(me) * count + i, dt, op),
                    dt, what);
      break;
    case Collective::barrier:
      g.barrier(info, dl);
      break;
  }
  ASSERT_EQ(g.last_row(), &row) << what << ": another row ran ("
                                << (g.last_row() ? g.last_row()->name : "none") << ")";
}

class TableWalk : public ::testing::TestWithParam<Case> {};

TEST_P(TableWalk, ForcedRowMatchesTheReference) {
  const Row& row = *GetParam().row;
  const int P = GetParam().world;
  if (row.path == algo::Path::shm) {
    // One alloc_shared allocation as the process group makes it: a segment each rank maps at
    // its own address (as it maps the group's barrier words; one heap block seen by every
    // thread at one address hid the barriers' ordering from ThreadSanitizer), rank r's block
    // at base + r * stride.
    const size_t stride = kBigBytes * 2 + 4096;
    run_ranks(P, [&](int rank, store::Store& store) {
      shm::ShmGroup g(store, "walk/", rank, P, kSlotBytes, -1, /*spare_core=*/false, kTimeout,
                      shm::StreamTuner::Mode::kAuto, row.name);
      shm::ShmSegment mem(store, "walk-blocks/", rank, P, stride * size_t(P), kTimeout);
      g.shared_blocks()->add(mem.data(), stride, stride, 7);
      std::byte* block = mem.data() + size_t(rank) * stride;
      for (DType dt : kAllDTypes) {
        if (row.collective == Collective::barrier && dt != DType::f32) continue;
        for (size_t count : counts_for(row, g.facts(), dt))
          for (ReduceOp op : ops_for(dt, ReduceOp::max)) {
            walk_shm_op(g, row, count, dt, op, block);
            if (::testing::Test::HasFatalFailure()) return;
          }
      }
    });
    return;
  }
  // Pair rows: all-reduces over tcp; f16/bf16 reach them widened to f32 (the caller's job).
  ASSERT_EQ(row.collective, Collective::allreduce) << row.name << ": pair rows are all-reduces";
  run_ranks(P, [&](int rank, store::Store& store) {
    tcp::TcpTransport t(store, "walk/", rank, P, kTimeout);
    AlignedBuffer scratch;
    uint64_t seq = 0;
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8})
      for (size_t count : counts_for(row, {.world = P}, dt))
        for (ReduceOp op : ops_for(dt, ReduceOp::avg)) {
          const std::string what = str_cat(row.name, " P=", P, " ", dtype_name(dt), " ",
                                           reduce_op_name(op), " n=", count);
          const size_t bytes = count * dtype_size(dt);
          ASSERT_EQ(algo::choose_pair_allreduce(bytes, P, row.name), row.pairs)
              << what << ": another row chosen";
          const OpInfo info{OpKind::allreduce, ++seq, rank, "walk"};
          algo::Ctx c{t, info, Deadline::after(kTimeout), seq, scratch};
          auto buf = make_input(rank, count, dt, op);
          row.pairs(c, buf.data(), count, dt, op);
          for (size_t i = 0; i < count; ++i) {
            expect_near(load_as_double(buf.data(), dt, i), reference(P, i, dt, op), dt, what);
            if (::testing::Test::HasFatalFailure()) return;
          }
        }
  });
}

INSTANTIATE_TEST_SUITE_P(Rows, TableWalk, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return str_cat(p.param.row->name, "_", p.param.world, "_ranks");
                         });

// Without a forced row, each size takes the row the table lists first for it: the walk above
// would pass even if auto never chose the fast paths.
TEST(AlgorithmTable, AutoChoosesByTheTableOrder) {
  run_ranks(2, [&](int rank, store::Store& store) {
    shm::ShmGroup g(store, "auto/", rank, 2, kSlotBytes, -1, /*spare_core=*/false, kTimeout,
                    shm::StreamTuner::Mode::kAuto, "auto");
    const OpInfo info{OpKind::allreduce, 1, rank, "auto"};
    const algo::Plan plan(algo::Path::shm, g.facts(), "auto");
    for (size_t count : {size_t(2), size_t(100), size_t(3000), size_t(100000)}) {
      std::vector<float> v(count, 1.0f);
      g.allreduce(v.data(), count, DType::f32, ReduceOp::sum, info, Deadline::after(kTimeout));
      const algo::Row* want = nullptr;
      for (const auto& ch : plan.choices(Collective::allreduce))
        if (!want && !ch.shared_only && ch.bytes.contains(count * 4)) want = ch.row;
      EXPECT_EQ(g.last_row(), want) << count;
      EXPECT_EQ(v[count - 1], 2.0f);
    }
  });
  EXPECT_EQ(algo::choose_pair_allreduce(8, 4, "auto"), algo::find_row("doubling")->pairs);
  EXPECT_EQ(algo::choose_pair_allreduce(8 << 20, 4, "auto"), algo::find_row("ring")->pairs);
  EXPECT_EQ(algo::choose_pair_allreduce(8 << 20, 4, "ring"), algo::find_row("ring")->pairs);
  // Forced "ring" (the trainer's fixed order) does not take shared-memory groups off their rows.
  EXPECT_EQ(algo::Plan(algo::Path::shm, {.world = 2, .slot_bytes = kSlotBytes}, "ring")
                .choices(Collective::allreduce)[0]
                .row->name,
            std::string("shm_lines"));
}

// A misspelt LOCKSTEP_ALGO is named, with the accepted values, where the group's plan is made
// — not silently replaced by auto.
TEST(AlgorithmTable, UnknownAlgorithmIsAConfigError) {
  try {
    algo::Plan(algo::Path::shm, {.world = 2, .slot_bytes = kSlotBytes}, "rnig");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("LOCKSTEP_ALGO"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("shm_staged"), std::string::npos) << e.what();
  }
  EXPECT_THROW(algo::choose_pair_allreduce(8, 2, "rnig"), ConfigError);
  EXPECT_NO_THROW(algo::choose_pair_allreduce(8, 2, "hierarchical"));
}

// LOCKSTEP_ALGO reaches a shared-memory group made by the native backend.
TEST(AlgorithmTable, EnvironmentForcesARowThroughTheBackend) {
  ::setenv("LOCKSTEP_ALGO", "shm_staged", 1);
  run_ranks(3, [&](int rank, store::Store& store) {
    auto pg = ProcessGroup::create("native", store, rank, 3, testing::test_options("shm"));
    auto buf = make_input(rank, 1027, DType::f32, ReduceOp::sum);
    pg->allreduce(buf.data(), 1027, DType::f32, ReduceOp::sum).wait();
    for (size_t i = 0; i < 1027; ++i)
      ASSERT_EQ(load_as_double(buf.data(), DType::f32, i),
                reference(3, i, DType::f32, ReduceOp::sum));
  });
  ::setenv("LOCKSTEP_ALGO", "no_such_row", 1);
  // Where the group is made, on shared memory and (before any collective ran) on tcp alike.
  for (const char* transport : {"shm", "tcp"})
    EXPECT_THROW(run_ranks(2,
                           [&](int rank, store::Store& store) {
                             ProcessGroup::create("native", store, rank, 2,
                                                  testing::test_options(transport));
                           }),
                 ConfigError)
        << transport;
  ::unsetenv("LOCKSTEP_ALGO");
}

}  // namespace
}  // namespace lockstep::comm
