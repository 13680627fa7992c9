// Every collective of the native backend, per transport x world size, checked element by
// element against a serial reference. Ranks are threads sharing one HashStore.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

#include "comm_test_util.h"
#include "lockstep/comm/native_process_group.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

using testing::make_input;
using testing::reference;
using testing::run_ranks;
using testing::test_options;

// Operations this rank's group ran on the thread that waited for them (native only).
uint64_t ran_on_waiter(ProcessGroup& pg) { return dynamic_cast<NativeProcessGroup&>(pg).ran_on_waiter(); }

// Whether `w` completes within `limit` while nobody waits for it (polled, not waited on).
bool completes_within(const Work& w, Clock::duration limit) {
  const auto t0 = Clock::now();
  while (!w.is_completed() && Clock::now() - t0 < limit) std::this_thread::sleep_for(std::chrono::microseconds(200));
  return w.is_completed();
}

struct Param {
  std::string transport;
  int world;
};

class CollectivesTest : public ::testing::TestWithParam<Param> {
 protected:
  // Runs fn(pg) on every rank with a fresh group.
  void each_rank(const std::function<void(ProcessGroup&)>& fn, Options o = {}) {
    const auto& p = GetParam();
    if (o.group_name == "default") o = test_options(p.transport);
    run_ranks(p.world, [&](int rank, store::Store& store) {
      auto pg = ProcessGroup::create("native", store, rank, p.world, o);
      fn(*pg);
    });
  }
};

constexpr size_t kCounts[] = {0, 1, 13, 1027, 70001};

void expect_reduced(const uint8_t* out, size_t count, int world, DType dt, ReduceOp op,
                    const std::string& what) {
  for (size_t i = 0; i < count; ++i) {
    double want = reference(world, i, dt, op), got = load_as_double(out, dt, i);
    ASSERT_NEAR(got, want, testing::tolerance(dt) * std::max(1.0, std::abs(want)))
        << what << " element " << i;
  }
}

TEST_P(CollectivesTest, AllreduceEveryDtypeOpAndCount) {
  each_rank([&](ProcessGroup& pg) {
    for (DType dt : kAllDTypes)
      for (ReduceOp op : kAllReduceOps)
        for (size_t count : kCounts) {
          if (count > 2000 && (op != ReduceOp::sum || (dt != DType::f32 && dt != DType::bf16)))
            continue;  // the large case: a few representatives keep the suite fast
          // One element of padding makes the buffer start unaligned.
          auto buf = make_input(pg.rank(), count, dt, op, 1);
          uint8_t* data = buf.data() + dtype_size(dt);
          pg.allreduce(data, count, dt, op).wait();
          expect_reduced(data, count, pg.size(), dt, op,
                         str_cat("allreduce ", dtype_name(dt), " ", reduce_op_name(op), " n=", count));
        }
  });
}

TEST_P(CollectivesTest, AllreduceForcedAlgorithms) {
  for (const char* algo : {"ring", "doubling"}) {
    Options o = test_options(GetParam().transport, algo);
    o.algorithm = algo;
    each_rank([&](ProcessGroup& pg) {
      for (size_t count : {size_t(1), size_t(5), size_t(4099), size_t(200003)}) {
        auto buf = make_input(pg.rank(), count, DType::f32, ReduceOp::sum);
        pg.allreduce(buf.data(), count, DType::f32, ReduceOp::sum).wait();
        expect_reduced(buf.data(), count, pg.size(), DType::f32, ReduceOp::sum,
                       str_cat(algo, " n=", count));
      }
    }, o);
  }
}

TEST_P(CollectivesTest, ManyInFlightCompleteInIssueOrder) {
  each_rank([&](ProcessGroup& pg) {
    std::vector<std::vector<uint8_t>> bufs;
    std::vector<Work> works;
    for (int k = 0; k < 12; ++k) bufs.push_back(make_input(pg.rank(), 100 + k, DType::f32, ReduceOp::max));
    for (int k = 0; k < 12; ++k)
      works.push_back(pg.allreduce(bufs[k].data(), 100 + k, DType::f32, ReduceOp::max));
    for (int k = 0; k < 12; ++k) {
      works[k].wait(std::chrono::seconds(60));
      EXPECT_TRUE(works[k].is_completed());
      expect_reduced(bufs[k].data(), 100 + k, pg.size(), DType::f32, ReduceOp::max, "in flight");
    }
  });
}

// A wait that accepts the group's own timeout (as DDP's does) runs a queued operation itself.
// It used to decline and leave a small operation, enqueued without waking the group's thread,
// to that thread's next look at the queue, up to a 2 ms nap later (fmnist-mlp DDP: 0.6-1 ms
// per 1 MiB bucket instead of 0.1). A few may still be taken by the group's thread when its
// nap ends between the enqueue and the wait.
TEST_P(CollectivesTest, WaitWithTheGroupTimeoutRunsTheOperationItself) {
  const Options o = test_options(GetParam().transport);
  each_rank([&](ProcessGroup& pg) {
    if (pg.size() == 1) return;  // completes at once, nothing to run
    constexpr size_t kCount = 16384;
    int on_waiter = 0;
    for (int k = 0; k < 20; ++k) {
      auto buf = make_input(pg.rank(), kCount, DType::f32, ReduceOp::sum);
      const uint64_t before = ran_on_waiter(pg);
      Work w = pg.allreduce(buf.data(), kCount, DType::f32, ReduceOp::sum);
      w.wait(o.timeout);
      on_waiter += int(ran_on_waiter(pg) - before);
      expect_reduced(buf.data(), kCount, pg.size(), DType::f32, ReduceOp::sum, "waited");
    }
    EXPECT_GE(on_waiter, 10) << "rank " << pg.rank() << ": of 20 operations waited with the "
                             << "group's timeout, only " << on_waiter << " ran on the waiter";
  }, o);
}

// allreduce_check_finite: every rank learns whether the result holds a NaN or an Inf, put by
// one rank anywhere (in its own slice, another rank's slice, the last element), on every path
// (low latency, one barrier, multi-round shm; tcp), and that a clean result is clean. The
// data is reduced as by allreduce.
TEST_P(CollectivesTest, CheckFiniteAllreduceFlagsNaNAndInfOnEveryRank) {
  const Options o = test_options(GetParam().transport);
  each_rank([&](ProcessGroup& pg) {
    for (size_t count : {size_t(13), size_t(3000), size_t(70001)})
      for (int culprit = 0; culprit < pg.size(); ++culprit)
        for (size_t at : {size_t(0), count / 2, count - 1}) {
          auto buf = make_input(pg.rank(), count, DType::f32, ReduceOp::avg);
          if (pg.rank() == culprit) store_from_double(buf.data(), DType::f32, at, at % 2 ? INFINITY : std::nan(""));
          auto check = std::make_shared<FiniteCheck>();
          Work w = pg.allreduce_check_finite(buf.data(), count, DType::f32, ReduceOp::avg, check);
          w.wait(o.timeout);
          ASSERT_TRUE(check->nonfinite().has_value()) << "the native group always answers";
          EXPECT_TRUE(*check->nonfinite()) << "rank " << pg.rank() << ": n=" << count << ", rank " << culprit
                                      << " put a NaN/Inf at " << at;
        }
    for (size_t count : {size_t(13), size_t(3000), size_t(70001)}) {
      auto buf = make_input(pg.rank(), count, DType::f32, ReduceOp::avg);
      auto check = std::make_shared<FiniteCheck>();
      Work w = pg.allreduce_check_finite(buf.data(), count, DType::f32, ReduceOp::avg, check);
      w.wait(o.timeout);
      ASSERT_TRUE(check->nonfinite().has_value());
      EXPECT_FALSE(*check->nonfinite()) << "rank " << pg.rank() << ": n=" << count;
      expect_reduced(buf.data(), count, pg.size(), DType::f32, ReduceOp::avg, "checked allreduce");
    }
  }, o);
}

// Buffers from alloc_shared: all-reduces inside them (here not at the allocation's start)
// reduce straight from the peers' memory on shm, every dtype and op, above and below the
// size where that path starts; tcp and one rank get ordinary memory and the usual paths.
TEST_P(CollectivesTest, AllreduceInSharedMemoryEveryDtypeOpAndCount) {
  constexpr size_t kOffset = 4096 + 64, kMaxCount = 200003;
  each_rank([&](ProcessGroup& pg) {
    auto mem = pg.alloc_shared(kOffset + kMaxCount * 8);
    ASSERT_TRUE(mem);
    EXPECT_EQ(mem[kOffset + kMaxCount * 8 - 1], std::byte{0}) << "alloc_shared memory is zeroed";
    uint8_t* data = reinterpret_cast<uint8_t*>(mem.get()) + kOffset;
    for (DType dt : kAllDTypes)
      for (ReduceOp op : kAllReduceOps)
        for (size_t count : {size_t(1), size_t(1027), size_t(70001), kMaxCount}) {
          if (count > 2000 && op != ReduceOp::sum && op != ReduceOp::avg && dt != DType::f32) continue;
          const auto in = make_input(pg.rank(), count, dt, op);
          std::memcpy(data, in.data(), count * dtype_size(dt));
          pg.allreduce(data, count, dt, op).wait();
          expect_reduced(data, count, pg.size(), dt, op,
                         str_cat("shared allreduce ", dtype_name(dt), " ", reduce_op_name(op), " n=", count));
        }
  });
}

// Back to back on the same shared buffer, values changing every iteration and interleaved
// with staged all-reduces: a rank that wrote its next input before a slow peer had read the
// current one, or read a slice before its owner stored it, gets another iteration's values.
// The NaN/Inf flag travels on this path too.
TEST_P(CollectivesTest, SharedMemoryAllreducesBackToBackNeverMixIterations) {
  constexpr size_t kCount = 70001;  // int32: 280 KB, above the one-barrier size everywhere
  each_rank([&](ProcessGroup& pg) {
    auto mem = pg.alloc_shared(kCount * sizeof(int32_t));
    auto* v = reinterpret_cast<int32_t*>(mem.get());
    std::vector<int32_t> staged(kCount);
    const int P = pg.size(), iters = P <= 2 ? 200 : 40;
    for (int it = 0; it < iters; ++it) {
      for (size_t i = 0; i < kCount; ++i) v[i] = int32_t(pg.rank() * 1000 + it * 7 + int(i % 13));
      Work w = pg.allreduce(v, kCount, DType::i32, ReduceOp::sum);
      std::fill(staged.begin(), staged.end(), int32_t(it));
      pg.allreduce(staged.data(), kCount, DType::i32, ReduceOp::sum).wait();
      w.wait();
      for (size_t i = 0; i < kCount; ++i) {
        const int32_t want = 1000 * P * (P - 1) / 2 + P * (it * 7 + int(i % 13));
        ASSERT_EQ(v[i], want) << "rank " << pg.rank() << " iteration " << it << " element " << i;
        ASSERT_EQ(staged[i], P * it) << "rank " << pg.rank() << " iteration " << it;
      }
    }
    auto f = pg.alloc_shared(kCount * sizeof(float));
    auto* x = reinterpret_cast<float*>(f.get());
    for (int culprit = 0; culprit < P; ++culprit) {
      for (size_t i = 0; i < kCount; ++i) x[i] = float(i % 5);
      if (pg.rank() == culprit) x[kCount - 1 - size_t(culprit)] = std::nanf("");
      auto check = std::make_shared<FiniteCheck>();
      pg.allreduce_check_finite(x, kCount, DType::f32, ReduceOp::avg, check).wait();
      ASSERT_TRUE(check->nonfinite().has_value());
      EXPECT_TRUE(*check->nonfinite()) << "rank " << pg.rank() << ": rank " << culprit << " put a NaN";
    }
    for (size_t i = 0; i < kCount; ++i) x[i] = float(i % 5);
    auto check = std::make_shared<FiniteCheck>();
    pg.allreduce_check_finite(x, kCount, DType::f32, ReduceOp::avg, check).wait();
    ASSERT_TRUE(check->nonfinite().has_value());
    EXPECT_FALSE(*check->nonfinite()) << "rank " << pg.rank();
    for (size_t i = 0; i < kCount; ++i) ASSERT_EQ(x[i], float(i % 5)) << "element " << i;
    mem.reset();  // gone from the group's view; the path falls back to staging for new memory
    auto again = pg.alloc_shared(kCount * sizeof(int32_t));
    auto* y = reinterpret_cast<int32_t*>(again.get());
    for (size_t i = 0; i < kCount; ++i) y[i] = int32_t(i % 3);
    pg.allreduce(y, kCount, DType::i32, ReduceOp::max).wait();
    for (size_t i = 0; i < kCount; ++i) ASSERT_EQ(y[i], int32_t(i % 3));
  });
}

// start_now(): an operation small enough to be held back for its waiter (up to 1 MiB) starts
// at once on the group's thread, as DDP needs for buckets launched during backward. Without
// it, it waits for the group thread's next look at the queue (Options::queue_poll, set here
// far beyond the test) or for its waiter.
TEST_P(CollectivesTest, StartNowStartsHeldBackOperationsWithoutAWaiter) {
  Options o = test_options(GetParam().transport);
  o.queue_poll = std::chrono::seconds(60);
  each_rank([&](ProcessGroup& pg) {
    if (pg.size() == 1) return;  // completes at once, nothing to start
    constexpr size_t kCount = 4096;
    pg.barrier().wait(o.timeout);
    for (bool hint : {false, true, false, true}) {
      // Let the group's thread settle into its nap: a thread that starts late, or that has
      // just run the previous hinted operation, finds whatever is queued meanwhile and runs it.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      pg.barrier().wait(o.timeout);  // the ranks issue together
      auto buf = make_input(pg.rank(), kCount, DType::f32, ReduceOp::sum);
      const uint64_t before = ran_on_waiter(pg);
      Work w = pg.allreduce(buf.data(), kCount, DType::f32, ReduceOp::sum);
      if (hint) {
        pg.start_now();
        EXPECT_TRUE(completes_within(w, std::chrono::seconds(30)))
            << "rank " << pg.rank() << ": start_now() did not start the queued all-reduce";
        EXPECT_EQ(ran_on_waiter(pg), before);
      } else {
        EXPECT_FALSE(completes_within(w, std::chrono::milliseconds(200)))
            << "rank " << pg.rank() << ": a held-back all-reduce ran with nobody waiting";
      }
      w.wait(o.timeout);  // without the hint: runs it here
      EXPECT_EQ(ran_on_waiter(pg) - before, hint ? 0u : 1u);
      expect_reduced(buf.data(), kCount, pg.size(), DType::f32, ReduceOp::sum, "started");
    }
  }, o);
}

// Without a spare core (NativeOptions::spare_core = 0) an operation of any size, 2 MiB here,
// is left to its waiter, which runs it on its own thread: started on the group's thread it
// would only take a computing rank's core (and cost two hand-offs). With one, an operation
// above 1 MiB starts at once, nobody waiting. Options::queue_poll is set far beyond the test,
// so the group's thread never finds a held-back operation on its own.
TEST_P(CollectivesTest, WithoutASpareCoreLargeOperationsWaitForTheirWaiter) {
  if (GetParam().world > 3) GTEST_SKIP() << "the engine's choice does not depend on the world size";
  for (int spare : {0, 1}) {
    Options o = test_options(GetParam().transport);
    o.queue_poll = std::chrono::seconds(60);
    auto native = std::make_shared<NativeOptions>(dynamic_cast<const NativeOptions&>(*o.backend));
    native->spare_core = spare;
    o.backend = native;
    each_rank([&](ProcessGroup& pg) {
      if (pg.size() == 1) return;  // completes at once
      EXPECT_EQ(pg.spare_core(), spare == 1);
      constexpr size_t kCount = 512 << 10;  // 2 MiB of f32
      pg.barrier().wait(o.timeout);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the group's thread naps
      pg.barrier().wait(o.timeout);
      auto buf = make_input(pg.rank(), kCount, DType::f32, ReduceOp::sum);
      const uint64_t before = ran_on_waiter(pg);
      Work w = pg.allreduce(buf.data(), kCount, DType::f32, ReduceOp::sum);
      const Clock::duration limit = spare ? Clock::duration(std::chrono::seconds(30))
                                          : Clock::duration(std::chrono::milliseconds(200));
      EXPECT_EQ(completes_within(w, limit), spare == 1)
          << "rank " << pg.rank() << ", spare_core " << spare << ": "
          << (spare ? "a 2 MiB all-reduce did not start without a waiter"
                    : "a 2 MiB all-reduce ran on the group's thread with nobody waiting");
      w.wait(o.timeout);
      EXPECT_EQ(ran_on_waiter(pg) - before, spare ? 0u : 1u) << "rank " << pg.rank();
      expect_reduced(buf.data(), kCount, pg.size(), DType::f32, ReduceOp::sum, "held back");
    }, o);
  }
}

// Back-to-back small all-reduces of integer counters whose sizes change every call: a rank
// that read a peer's previous data (a stale slot, or old data mistaken for a fresh tag)
// would see an earlier iteration's values. Mixes the low-latency, one-barrier and chunked
// paths of shm.
TEST_P(CollectivesTest, BackToBackSmallAllreducesNeverSeeStaleData) {
  constexpr size_t kSizes[] = {1, 2, 7, 64, 511, 512, 513, 1500, 2100};
  each_rank([&](ProcessGroup& pg) {
    const int iters = pg.size() <= 2 ? 3000 : 600;
    std::vector<int64_t> v(2100);
    for (int it = 1; it <= iters; ++it) {
      const size_t n = kSizes[size_t(it) % std::size(kSizes)];
      for (size_t i = 0; i < n; ++i) v[i] = int64_t(it) * 1000 + pg.rank() + int64_t(i);
      pg.allreduce(v.data(), n, DType::i64, ReduceOp::sum).wait();
      const int64_t ranks = int64_t(pg.size()) * (pg.size() - 1) / 2;
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(v[i], pg.size() * (int64_t(it) * 1000 + int64_t(i)) + ranks)
            << "iteration " << it << " n=" << n << " element " << i << " rank " << pg.rank();
    }
  });
}

TEST_P(CollectivesTest, ReduceToEachRoot) {
  each_rank([&](ProcessGroup& pg) {
    for (DType dt : {DType::f32, DType::bf16, DType::i64})
      for (int root : {0, pg.size() - 1})
        for (size_t count : {size_t(1), size_t(77), size_t(5000)}) {
          auto buf = make_input(pg.rank(), count, dt, ReduceOp::sum);
          pg.reduce(buf.data(), count, dt, ReduceOp::sum, root).wait();
          if (pg.rank() == root) expect_reduced(buf.data(), count, pg.size(), dt, ReduceOp::sum, "reduce");
        }
  });
}

TEST_P(CollectivesTest, BroadcastFromEachRoot) {
  each_rank([&](ProcessGroup& pg) {
    for (int root = 0; root < pg.size(); ++root)
      for (size_t count : {size_t(0), size_t(1), size_t(333), size_t(100001)}) {
        std::vector<int32_t> v(count, -1);
        if (pg.rank() == root) std::iota(v.begin(), v.end(), root * 1000);
        pg.broadcast(v.data(), count, DType::i32, root).wait();
        for (size_t i = 0; i < count; ++i) ASSERT_EQ(v[i], int32_t(root * 1000 + i)) << "root " << root;
      }
  });
}

TEST_P(CollectivesTest, AllgatherAndGather) {
  each_rank([&](ProcessGroup& pg) {
    const int P = pg.size();
    for (size_t count : {size_t(0), size_t(1), size_t(17), size_t(40000)}) {
      std::vector<int64_t> in(count), out(count * P, -1), g(count * P, -1);
      for (size_t i = 0; i < count; ++i) in[i] = pg.rank() * 1000000 + int64_t(i);
      pg.allgather(in.data(), out.data(), count, DType::i64).wait();
      int root = P / 2;
      pg.gather(in.data(), pg.rank() == root ? g.data() : nullptr, count, DType::i64, root).wait();
      for (int r = 0; r < P; ++r)
        for (size_t i = 0; i < count; ++i) {
          ASSERT_EQ(out[r * count + i], r * 1000000 + int64_t(i)) << "allgather n=" << count;
          if (pg.rank() == root) {
            ASSERT_EQ(g[r * count + i], r * 1000000 + int64_t(i)) << "gather";
          }
        }
    }
  });
}

TEST_P(CollectivesTest, ReduceScatter) {
  each_rank([&](ProcessGroup& pg) {
    const int P = pg.size();
    for (DType dt : {DType::f32, DType::f16, DType::i32, DType::u8})
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::avg})
        for (size_t count : {size_t(1), size_t(9), size_t(30011)}) {
          auto in = make_input(pg.rank(), count * P, dt, op);
          std::vector<uint8_t> out(count * dtype_size(dt));
          pg.reduce_scatter(in.data(), out.data(), count, dt, op).wait();
          for (size_t i = 0; i < count; ++i) {
            double want = reference(P, pg.rank() * count + i, dt, op);
            ASSERT_NEAR(load_as_double(out.data(), dt, i), want,
                        testing::tolerance(dt) * std::max(1.0, std::abs(want)))
                << dtype_name(dt) << " " << reduce_op_name(op) << " n=" << count << " i=" << i;
          }
        }
  });
}

// Inputs from alloc_shared: reduce-scatter and all-gather read the peers' inputs in place on
// shm, above and below the size where that path starts (here not at the allocation's start).
// Back to back with values changing every iteration: a rank that rewrote its input before a
// slow peer had read it gives that peer another iteration's values.
TEST_P(CollectivesTest, ReduceScatterAndAllgatherFromSharedMemory) {
  constexpr size_t kOffset = 4096 + 64, kMaxCount = 30011;
  each_rank([&](ProcessGroup& pg) {
    const int P = pg.size();
    auto mem = pg.alloc_shared(kOffset + kMaxCount * size_t(P) * 8);
    uint8_t* in = reinterpret_cast<uint8_t*>(mem.get()) + kOffset;
    for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::f64})
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::min})
        for (size_t count : {size_t(1), size_t(1027), kMaxCount}) {
          const auto src = make_input(pg.rank(), count * P, dt, op);
          std::memcpy(in, src.data(), count * P * dtype_size(dt));
          std::vector<uint8_t> out(count * dtype_size(dt));
          pg.reduce_scatter(in, out.data(), count, dt, op).wait();
          for (size_t i = 0; i < count; ++i) {
            const double want = reference(P, pg.rank() * count + i, dt, op);
            ASSERT_NEAR(load_as_double(out.data(), dt, i), want,
                        testing::tolerance(dt) * std::max(1.0, std::abs(want)))
                << "shared reduce_scatter " << dtype_name(dt) << " " << reduce_op_name(op) << " n=" << count
                << " i=" << i;
          }
        }
    const int iters = P <= 2 ? 100 : 20;
    for (size_t count : {size_t(3), size_t(1027), kMaxCount}) {
      auto* v = reinterpret_cast<int32_t*>(in);
      std::vector<int32_t> scattered(count), gathered(count * size_t(P));
      for (int it = 0; it < iters; ++it) {
        for (size_t i = 0; i < count * size_t(P); ++i) v[i] = int32_t(pg.rank() * 1000 + it * 7 + int(i % 13));
        pg.reduce_scatter(v, scattered.data(), count, DType::i32, ReduceOp::sum).wait();
        for (size_t i = 0; i < count; ++i) {
          const int32_t want = 1000 * P * (P - 1) / 2 + P * (it * 7 + int((pg.rank() * count + i) % 13));
          ASSERT_EQ(scattered[i], want) << "reduce_scatter: rank " << pg.rank() << " iteration " << it << " i=" << i;
        }
        for (size_t i = 0; i < count; ++i) v[i] = int32_t(pg.rank() * 1000 + it * 7 + int(i % 13));
        pg.allgather(v, gathered.data(), count, DType::i32).wait();
        for (int r = 0; r < P; ++r)
          for (size_t i = 0; i < count; ++i)
            ASSERT_EQ(gathered[size_t(r) * count + i], int32_t(r * 1000 + it * 7 + int(i % 13)))
                << "allgather: rank " << pg.rank() << " iteration " << it << " from rank " << r << " i=" << i;
      }
    }
    // In place: the input is this rank's piece of the output, all of it shared.
    auto* whole = reinterpret_cast<int64_t*>(in);
    for (size_t i = 0; i < kMaxCount; ++i) whole[size_t(pg.rank()) * kMaxCount + i] = pg.rank() * 1000000 + int64_t(i);
    pg.allgather(whole + size_t(pg.rank()) * kMaxCount, whole, kMaxCount, DType::i64).wait();
    for (int r = 0; r < P; ++r)
      for (size_t i = 0; i < kMaxCount; ++i)
        ASSERT_EQ(whole[size_t(r) * kMaxCount + i], r * 1000000 + int64_t(i)) << "in-place allgather from rank " << r;
  });
}

TEST_P(CollectivesTest, ScatterAndAlltoall) {
  each_rank([&](ProcessGroup& pg) {
    const int P = pg.size(), me = pg.rank();
    for (size_t count : {size_t(1), size_t(10), size_t(20000)}) {
      std::vector<float> in(count * P), out(count), a_in(count * P), a_out(count * P, -1);
      for (size_t i = 0; i < in.size(); ++i) in[i] = float(i);
      pg.scatter(me == 0 ? in.data() : nullptr, out.data(), count, DType::f32, 0).wait();
      for (size_t i = 0; i < count; ++i) ASSERT_EQ(out[i], float(me * count + i));
      for (int j = 0; j < P; ++j)
        for (size_t i = 0; i < count; ++i) a_in[j * count + i] = float(me * 100000 + j * 1000 + i % 1000);
      pg.alltoall(a_in.data(), a_out.data(), count, DType::f32).wait();
      for (int j = 0; j < P; ++j)
        for (size_t i = 0; i < count; ++i)
          ASSERT_EQ(a_out[j * count + i], float(j * 100000 + me * 1000 + i % 1000));
    }
  });
}

TEST_P(CollectivesTest, BarrierAndSendRecvRing) {
  each_rank([&](ProcessGroup& pg) {
    const int P = pg.size(), me = pg.rank();
    for (int k = 0; k < 5; ++k) pg.barrier().wait();
    if (P == 1) return;
    std::vector<double> out(1000, me), in(1000, -1);
    int right = (me + 1) % P, left = (me + P - 1) % P;
    // Even ranks send first: with ordered streams any order works, this one mirrors MPI codes.
    Work s = pg.send(out.data(), out.size(), DType::f64, right, 7);
    Work r = pg.recv(in.data(), in.size(), DType::f64, left, 7);
    s.wait();
    r.wait();
    for (double v : in) ASSERT_EQ(v, left);
  });
}

TEST_P(CollectivesTest, SubGroupOfEvenRanks) {
  each_rank([&](ProcessGroup& pg) {
    std::vector<int> evens;
    for (int r = 0; r < pg.size(); r += 2) evens.push_back(r);
    auto sub = pg.new_group(evens);
    ASSERT_EQ(sub != nullptr, pg.rank() % 2 == 0);
    if (sub) {
      ASSERT_EQ(sub->size(), int(evens.size()));
      int64_t v = pg.rank();
      sub->allreduce(&v, 1, DType::i64, ReduceOp::sum).wait();
      int64_t want = 0;
      for (int r : evens) want += r;
      EXPECT_EQ(v, want);
    }
    int64_t all = 1;  // the parent group still works after the sub-group came and went
    pg.allreduce(&all, 1, DType::i64, ReduceOp::sum).wait();
    EXPECT_EQ(all, pg.size());
  });
}

std::vector<Param> params() {
  std::vector<Param> ps;
  for (const char* t : {"shm", "tcp"})
    for (int w = 1; w <= 8; ++w) ps.push_back({t, w});
  return ps;
}

INSTANTIATE_TEST_SUITE_P(Native, CollectivesTest, ::testing::ValuesIn(params()),
                         [](const auto& info) {
                           return info.param.transport + "_w" + std::to_string(info.param.world);
                         });

}  // namespace
}  // namespace lockstep::comm
