// The pipelined shared-memory all-reduce (row shm_pipelined, algorithms/
// shm_allreduce_pipelined.cpp: rounds of one barrier each), forced through Options::algorithm
// of the native backend, at 2, 3 and 4 ranks: what the table walk (algorithm_table_test.cpp)
// does not cover. The staging slot is 4 KiB, so buffers of a few KiB take many rounds, a
// partial last one and slices of unequal length. Ranks are threads sharing one HashStore.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "comm_test_util.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

using testing::make_input;
using testing::reference;
using testing::run_ranks;

constexpr size_t kSlot = 4096;  // staging bytes per rank and round

Options pipelined_options() {
  Options o = testing::test_options("shm", "pipelined");
  o.algorithm = "shm_pipelined";
  auto native = std::make_shared<NativeOptions>();
  native->shm_chunk_bytes = kSlot;
  o.backend = native;
  return o;
}

void each_rank(int world, const std::function<void(ProcessGroup&)>& fn) {
  run_ranks(world, [&](int rank, store::Store& store) {
    auto pg = ProcessGroup::create("native", store, rank, world, pipelined_options());
    fn(*pg);
  });
}

// Elements of `dt` per round on `world` ranks (the row's slice stride is whole 64-byte lines).
size_t per_round(DType dt, int world) {
  const size_t stride = std::max<size_t>(64, kSlot / size_t(world) / 64 * 64);
  return stride / dtype_size(dt) * size_t(world);
}

// Around the round boundaries (one round, two) and odd counts over several rounds up to 20.
std::vector<size_t> counts_for(DType dt, int world) {
  const size_t at = per_round(dt, world);
  return {at - 1, at, at + 1, 2 * at - 1, 2 * at, 2 * at + 1, 7 * at / 2 + 13, 20 * at + 5};
}

// FNV-1a of the bytes: every rank must end with the same bits, not just close values.
int64_t digest(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return int64_t(h >> 1);
}

void expect_same_bits_everywhere(ProcessGroup& pg, const uint8_t* p, size_t n,
                                 const std::string& what) {
  int64_t lo = digest(p, n), hi = lo;
  pg.allreduce(&lo, 1, DType::i64, ReduceOp::min).wait();
  pg.allreduce(&hi, 1, DType::i64, ReduceOp::max).wait();
  EXPECT_EQ(lo, hi) << what << ": the ranks' results differ in their bits";
}

class PipelinedAllreduceTest : public ::testing::TestWithParam<int> {};

// The walk runs several rounds only in f32 sum/max; here every dtype the row takes and every
// op, at the round boundaries, from an unaligned start.
TEST_P(PipelinedAllreduceTest, EveryDtypeAndOpAroundTheRoundBoundaries) {
  each_rank(GetParam(), [&](ProcessGroup& pg) {
    for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32})
      for (ReduceOp op :
           {ReduceOp::sum, ReduceOp::avg, ReduceOp::min, ReduceOp::max, ReduceOp::prod})
        for (size_t count : counts_for(dt, pg.size())) {
          // One element of padding makes the buffer start unaligned.
          auto buf = make_input(pg.rank(), count, dt, op, 1);
          uint8_t* data = buf.data() + dtype_size(dt);
          pg.allreduce(data, count, dt, op).wait();
          const std::string what =
              str_cat(dtype_name(dt), " ", reduce_op_name(op), " n=", count, " rank ", pg.rank());
          for (size_t i = 0; i < count; ++i) {
            const double want = reference(pg.size(), i, dt, op), got = load_as_double(data, dt, i);
            ASSERT_NEAR(got, want, testing::tolerance(dt) * std::max(1.0, std::abs(want)))
                << what << " element " << i;
          }
          expect_same_bits_everywhere(pg, data, count * dtype_size(dt), what);
        }
  });
}

// Operations issued back to back without waiting, sizes changing every call (so the slices
// of consecutive operations lie at other offsets of the same half-slot) and the small rows in
// between: a rank that overwrote a slot a slow peer had not read yet, or read a slice before
// its owner stored it, gets another iteration's values.
TEST_P(PipelinedAllreduceTest, BackToBackOperationsNeverMixIterations) {
  constexpr size_t kSizes[] = {20000, 2049, 9000, 3, 1500, 4097, 30001};  // int32 elements
  each_rank(GetParam(), [&](ProcessGroup& pg) {
    const int P = pg.size(), iters = 60;
    const int64_t ranks = int64_t(P) * (P - 1) / 2;
    std::vector<std::vector<int32_t>> bufs(std::size(kSizes));
    for (int it = 0; it < iters; ++it) {
      std::vector<Work> works;
      for (size_t s = 0; s < std::size(kSizes); ++s) {
        const size_t n = kSizes[(s + size_t(it)) % std::size(kSizes)];
        bufs[s].assign(n, 0);
        for (size_t i = 0; i < n; ++i)
          bufs[s][i] = int32_t(pg.rank() + 10 * (it * 8 + int(s)) + int(i % 1000) * 10000);
        works.push_back(pg.allreduce(bufs[s].data(), n, DType::i32, ReduceOp::sum));
      }
      for (size_t s = 0; s < works.size(); ++s) {
        works[s].wait();
        for (size_t i = 0; i < bufs[s].size(); ++i)
          ASSERT_EQ(bufs[s][i], ranks + P * (10 * (it * 8 + int(s)) + int(i % 1000) * 10000))
              << "rank " << pg.rank() << " iteration " << it << " operation " << s
              << " n=" << bufs[s].size() << " element " << i;
      }
    }
  });
}

// allreduce_check_finite on this row (the walk passes no flag): a NaN or an Inf put by any
// one rank in the first round, the middle, or the last element (each in another rank's slice
// somewhere) is flagged on every rank; a clean operation right after a flagged one is clean.
TEST_P(PipelinedAllreduceTest, NonfiniteFlagOnEveryRankAndCleanRightAfter) {
  each_rank(GetParam(), [&](ProcessGroup& pg) {
    const size_t count = 7 * kSlot / sizeof(float) + 3;
    for (int culprit = 0; culprit < pg.size(); ++culprit)
      for (size_t at : {size_t(0), size_t(700), count / 2, count - 1}) {
        for (bool poisoned : {true, false}) {
          auto buf = make_input(pg.rank(), count, DType::f32, ReduceOp::avg);
          if (poisoned && pg.rank() == culprit)
            store_from_double(buf.data(), DType::f32, at, at % 2 ? INFINITY : std::nan(""));
          auto check = std::make_shared<FiniteCheck>();
          pg.allreduce_check_finite(buf.data(), count, DType::f32, ReduceOp::avg, check).wait();
          ASSERT_TRUE(check->nonfinite().has_value());
          EXPECT_EQ(*check->nonfinite(), poisoned)
              << "rank " << pg.rank() << ": rank " << culprit
              << (poisoned ? " put" : " did not put") << " a NaN/Inf at " << at << " of " << count;
          if (poisoned) continue;
          for (size_t i = 0; i < count; ++i)
            ASSERT_NEAR(load_as_double(buf.data(), DType::f32, i),
                        reference(pg.size(), i, DType::f32, ReduceOp::avg), 1e-6 * 8)
                << "element " << i;
        }
      }
  });
}

INSTANTIATE_TEST_SUITE_P(Shm, PipelinedAllreduceTest, ::testing::Values(2, 3, 4),
                         [](const auto& info) { return "w" + std::to_string(info.param); });

// Options::algorithm (not only LOCKSTEP_ALGO) reaches a shared-memory group made by the
// native backend: a misspelt row is refused where the group is made.
TEST(PipelinedAllreduce, OptionsAlgorithmReachesSharedMemoryGroups) {
  Options o = pipelined_options();
  o.algorithm = "shm_pipelind";
  try {
    run_ranks(2, [&](int rank, store::Store& store) {
      ProcessGroup::create("native", store, rank, 2, o);
    });
    FAIL() << "Options::algorithm='shm_pipelind' accepted by a shared-memory group";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("shm_pipelined"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lockstep::comm
