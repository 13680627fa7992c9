// The backend conformance suite: every collective of ProcessGroup x every dtype x every
// reduce op x counts {0, 1, odd, large-ish} against a serial reference, for each backend
// built in (native included) at several world sizes. The same tests run thread-per-rank
// (native, gloo, nccl) and as real processes under mpirun (mpi); see CMakeLists.txt.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "harness.h"
#include "lockstep/comm/backends/registry.h"
#include "lockstep/comm/engine.h"
#include "lockstep/core/error.h"

namespace lockstep::comm::conformance {
namespace {

class Conformance : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const std::string why = backend_unavailable_reason(GetParam().backend, GetParam().world);
    if (!why.empty()) GTEST_SKIP() << why;
  }
  void each_rank(const std::function<void(ProcessGroup&)>& fn) { run_ranks(GetParam(), fn); }
};

#define EXPECT_MATCH(diff, ...) EXPECT_EQ(diff, "") << __VA_ARGS__

TEST_P(Conformance, AllreduceEveryDtypeOpAndCount) {
  each_rank([](ProcessGroup& pg) {
    const int me = pg.rank(), P = pg.size();
    for (DType dt : kAllDTypes)
      for (ReduceOp op : kAllReduceOps)
        for (size_t n : kCounts) {
          auto buf = make_buffer(n, dt, [&](size_t i) { return reduce_input(me, i, dt, op); });
          pg.allreduce(buf.data(), n, dt, op).wait();
          EXPECT_MATCH(compare(buf.data(), n, dt, [&](size_t i) { return reduce_reference(P, i, dt, op); }),
                       "rank " << me << " " << reduce_op_name(op) << " count " << n);
        }
  });
}

TEST_P(Conformance, AllreduceLarge) {
  each_rank([](ProcessGroup& pg) {
    const size_t n = (4u << 20) + 3;  // 16 MiB of f32, unaligned tail
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = float(reduce_input(pg.rank(), i, DType::f32, ReduceOp::sum));
    pg.allreduce(v.data(), n, DType::f32, ReduceOp::sum).wait();
    EXPECT_MATCH(compare(v.data(), n, DType::f32,
                         [&](size_t i) { return reduce_reference(pg.size(), i, DType::f32, ReduceOp::sum); }),
                 "rank " << pg.rank());
  });
}

TEST_P(Conformance, ManyInFlightCompleteInIssueOrder) {
  each_rank([](ProcessGroup& pg) {
    constexpr int kOps = 16;
    std::vector<std::vector<int64_t>> bufs(kOps, std::vector<int64_t>(1000));
    std::vector<Work> works;
    for (int k = 0; k < kOps; ++k) {
      for (size_t i = 0; i < 1000; ++i) bufs[k][i] = k * 1000 + int64_t(i) + pg.rank();
      works.push_back(pg.allreduce(bufs[k].data(), 1000, DType::i64, ReduceOp::max));
    }
    for (auto& w : works) w.wait();
    for (int k = 0; k < kOps; ++k) EXPECT_EQ(bufs[k][999], k * 1000 + 999 + pg.size() - 1);
  });
}

// The one engine's inline hand-off, on every backend that allows it (nccl opts out): a wait
// that accepts the group's own timeout runs the queued operation on the waiting thread, with
// no thread hand-off. Before the engine was shared only native had it. A few may still be
// taken by the group's thread, when its nap ends between the enqueue and the wait.
TEST_P(Conformance, WaitWithTheGroupTimeoutRunsTheOperationOnTheWaiter) {
  if (GetParam().world == 1) GTEST_SKIP() << "world size 1 completes at once";
  if (GetParam().backend == "nccl") GTEST_SKIP() << "nccl opts out of the inline hand-off";
  const Options o = test_options();
  each_rank([&](ProcessGroup& pg) {
    auto& eng = dynamic_cast<engine::EngineGroup&>(pg);
    int on_waiter = 0;
    for (int k = 0; k < 20; ++k) {
      std::vector<float> v(1024, float(pg.rank()));
      const uint64_t before = eng.ran_on_waiter();
      pg.allreduce(v.data(), v.size(), DType::f32, ReduceOp::sum).wait(o.timeout);
      on_waiter += int(eng.ran_on_waiter() - before);
      EXPECT_EQ(v[1023], float(pg.size() * (pg.size() - 1) / 2)) << "rank " << pg.rank();
    }
    EXPECT_GE(on_waiter, 10) << "rank " << pg.rank() << ": of 20 operations waited with the "
                             << "group's timeout, only " << on_waiter << " ran on the waiter";
  });
}

// A waiter that finds the group's thread busy with an earlier operation waits for it and then
// runs its own, rather than sleeping while that thread runs it too (two hand-offs). The old
// rule made a run of synchronous all-reduces hop onto the group's thread for good once one
// had: the caller came back with the next while that thread was still finishing the last.
// Here rank 0 starts A on its group's thread (start_now), which waits there for the late
// other ranks, and then waits for B: B must run on rank 0's waiter, whoever ran A.
TEST_P(Conformance, AWaiterRunsItsOperationAfterTheOneTheGroupThreadRuns) {
  if (GetParam().world == 1) GTEST_SKIP() << "world size 1 completes at once";
  if (GetParam().backend == "nccl") GTEST_SKIP() << "nccl opts out of the inline hand-off";
  const Options o = test_options();
  each_rank([&](ProcessGroup& pg) {
    auto& eng = dynamic_cast<engine::EngineGroup&>(pg);
    std::vector<float> a(1024, 1.0f), b(1024, float(pg.rank()));
    pg.barrier().wait(o.timeout);
    const uint64_t before = eng.ran_on_waiter();
    if (pg.rank() == 0) {
      Work wa = pg.allreduce(a.data(), a.size(), DType::f32, ReduceOp::sum);
      pg.start_now();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // A runs, waiting for peers
      pg.allreduce(b.data(), b.size(), DType::f32, ReduceOp::sum).wait(o.timeout);
      wa.wait(o.timeout);
      EXPECT_GE(eng.ran_on_waiter() - before, 1u)
          << "B, waited for with the group's timeout while the group's thread ran A, ran on "
             "that thread instead of on its waiter";
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      pg.allreduce(a.data(), a.size(), DType::f32, ReduceOp::sum).wait(o.timeout);
      pg.allreduce(b.data(), b.size(), DType::f32, ReduceOp::sum).wait(o.timeout);
    }
    EXPECT_EQ(a[1023], float(pg.size())) << "rank " << pg.rank();
    EXPECT_EQ(b[1023], float(pg.size() * (pg.size() - 1) / 2)) << "rank " << pg.rank();
  });
}

TEST_P(Conformance, BroadcastFromFirstAndLastRoot) {
  each_rank([](ProcessGroup& pg) {
    for (int root : {0, pg.size() - 1})
      for (DType dt : kAllDTypes)
        for (size_t n : kCounts) {
          auto buf = make_buffer(n, dt, [&](size_t i) { return move_input(pg.rank(), i); });
          pg.broadcast(buf.data(), n, dt, root).wait();
          EXPECT_MATCH(compare(buf.data(), n, dt, [&](size_t i) { return move_input(root, i); }),
                       "rank " << pg.rank() << " root " << root << " count " << n);
        }
  });
}

TEST_P(Conformance, ReduceToLastRoot) {
  each_rank([](ProcessGroup& pg) {
    const int root = pg.size() - 1;
    for (DType dt : kAllDTypes)
      for (ReduceOp op : kAllReduceOps)
        for (size_t n : kCounts) {
          auto buf = make_buffer(n, dt, [&](size_t i) { return reduce_input(pg.rank(), i, dt, op); });
          pg.reduce(buf.data(), n, dt, op, root).wait();
          if (pg.rank() != root) continue;
          EXPECT_MATCH(compare(buf.data(), n, dt, [&](size_t i) { return reduce_reference(pg.size(), i, dt, op); }),
                       reduce_op_name(op) << " count " << n);
        }
  });
}

TEST_P(Conformance, AllgatherAndGather) {
  each_rank([](ProcessGroup& pg) {
    const int P = pg.size(), me = pg.rank();
    for (DType dt : kAllDTypes)
      for (size_t n : kCounts) {
        auto in = make_buffer(n, dt, [&](size_t i) { return move_input(me, i); });
        auto want = [&](size_t i) { return move_input(int(i / n), i % n); };
        auto out = make_buffer(n * P, dt, [](size_t) { return 0.0; });
        pg.allgather(in.data(), out.data(), n, dt).wait();
        EXPECT_MATCH(compare(out.data(), n * P, dt, want), "allgather rank " << me << " count " << n);
        const int root = P / 2;
        auto g = make_buffer(n * P, dt, [](size_t) { return 0.0; });
        pg.gather(in.data(), me == root ? g.data() : nullptr, n, dt, root).wait();
        if (me == root) {
          EXPECT_MATCH(compare(g.data(), n * P, dt, want), "gather count " << n);
        }
      }
  });
}

TEST_P(Conformance, ReduceScatterEveryDtypeAndOp) {
  each_rank([](ProcessGroup& pg) {
    const int P = pg.size(), me = pg.rank();
    for (DType dt : kAllDTypes)
      for (ReduceOp op : kAllReduceOps)
        for (size_t n : kCounts) {
          // Element j of the input is the reduce input at global index j.
          auto in = make_buffer(n * P, dt, [&](size_t j) { return reduce_input(me, j, dt, op); });
          auto out = make_buffer(n, dt, [](size_t) { return 0.0; });
          pg.reduce_scatter(in.data(), out.data(), n, dt, op).wait();
          EXPECT_MATCH(compare(out.data(), n, dt,
                               [&](size_t i) { return reduce_reference(P, me * n + i, dt, op); }),
                       "rank " << me << " " << reduce_op_name(op) << " count " << n);
        }
  });
}

TEST_P(Conformance, ScatterAndAlltoall) {
  each_rank([](ProcessGroup& pg) {
    const int P = pg.size(), me = pg.rank();
    for (DType dt : kAllDTypes)
      for (size_t n : kCounts) {
        const int root = P - 1;
        // Piece r of the root's input is move_input(r, .).
        auto in = make_buffer(n * P, dt, [&](size_t j) { return move_input(int(j / n), j % n); });
        auto out = make_buffer(n, dt, [](size_t) { return 0.0; });
        pg.scatter(me == root ? in.data() : nullptr, out.data(), n, dt, root).wait();
        EXPECT_MATCH(compare(out.data(), n, dt, [&](size_t i) { return move_input(me, i); }),
                     "scatter rank " << me << " count " << n);
        // alltoall: piece j of rank i's input is (i*P + j)-tagged; it lands in piece i of rank j.
        auto a_in = make_buffer(n * P, dt, [&](size_t k) { return move_input(me * P + int(k / n), k % n); });
        auto a_out = make_buffer(n * P, dt, [](size_t) { return 0.0; });
        pg.alltoall(a_in.data(), a_out.data(), n, dt).wait();
        EXPECT_MATCH(compare(a_out.data(), n * P, dt,
                             [&](size_t k) { return move_input(int(k / n) * P + me, k % n); }),
                     "alltoall rank " << me << " count " << n);
      }
  });
}

TEST_P(Conformance, BarrierWaitsForTheLastRank) {
  each_rank([](ProcessGroup& pg) {
    for (int k = 0; k < 4; ++k) pg.barrier().wait();
    // Every rank reads `start` before the barrier that rank 0 leaves before its sleep, so the
    // last barrier ends >= 300 ms after each rank's start, however late that rank ran.
    const auto start = Clock::now();
    pg.barrier().wait();
    if (pg.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    pg.barrier().wait();
    if (pg.size() > 1) {
      EXPECT_GE(seconds_since(start), 0.25) << "rank " << pg.rank();
    }
  });
}

TEST_P(Conformance, SendRecvRingEveryDtype) {
  each_rank([](ProcessGroup& pg) {
    const int P = pg.size(), me = pg.rank();
    if (P == 1) return;
    const int right = (me + 1) % P, left = (me + P - 1) % P;
    for (DType dt : kAllDTypes)
      for (size_t n : kCounts) {
        auto out = make_buffer(n, dt, [&](size_t i) { return move_input(me, i); });
        auto in = make_buffer(n, dt, [](size_t) { return 0.0; });
        // Even ranks send first, odd ranks receive first: safe on every engine, NCCL included.
        if (me % 2 == 0) {
          pg.send(out.data(), n, dt, right, 5).wait();
          pg.recv(in.data(), n, dt, left, 5).wait();
        } else {
          pg.recv(in.data(), n, dt, left, 5).wait();
          pg.send(out.data(), n, dt, right, 5).wait();
        }
        EXPECT_MATCH(compare(in.data(), n, dt, [&](size_t i) { return move_input(left, i); }),
                     "rank " << me << " count " << n);
      }
  });
}

TEST_P(Conformance, SendThenRecvOnEveryRankDoesNotDeadlock) {
  if (GetParam().backend == "nccl") GTEST_SKIP() << "NCCL point-to-point is stream-ordered";
  each_rank([](ProcessGroup& pg) {
    const int P = pg.size(), me = pg.rank();
    if (P == 1) return;
    const int right = (me + 1) % P, left = (me + P - 1) % P;
    std::vector<double> out(1000, me), in(1000, -1);
    Work s = pg.send(out.data(), out.size(), DType::f64, right, 9);
    Work r = pg.recv(in.data(), in.size(), DType::f64, left, 9);
    s.wait();
    r.wait();
    EXPECT_EQ(in[0], left);
    EXPECT_EQ(in[999], left);
  });
}

TEST_P(Conformance, SubGroupOfEvenRanks) {
  each_rank([](ProcessGroup& pg) {
    std::vector<int> evens;
    for (int r = 0; r < pg.size(); r += 2) evens.push_back(r);
    auto sub = pg.new_group(evens);
    ASSERT_EQ(sub != nullptr, pg.rank() % 2 == 0);
    if (sub) {
      EXPECT_EQ(sub->size(), int(evens.size()));
      EXPECT_EQ(sub->rank(), pg.rank() / 2);
      int64_t v = pg.rank();
      sub->allreduce(&v, 1, DType::i64, ReduceOp::sum).wait();
      int64_t want = 0;
      for (int r : evens) want += r;
      EXPECT_EQ(v, want);
    }
    int64_t all = 1;  // the parent still works after the sub-group came and went
    pg.allreduce(&all, 1, DType::i64, ReduceOp::sum).wait();
    EXPECT_EQ(all, pg.size());
  });
}

TEST_P(Conformance, BadRootAndPeerAreRejectedAtTheCall) {
  each_rank([](ProcessGroup& pg) {
    float x = 0;
    EXPECT_THROW(pg.broadcast(&x, 1, DType::f32, pg.size()), InvalidArgument);
    EXPECT_THROW(pg.reduce(&x, 1, DType::f32, ReduceOp::sum, -1), InvalidArgument);
    EXPECT_THROW(pg.send(&x, 1, DType::f32, pg.size() + 3, 0), InvalidArgument);
    pg.barrier().wait();  // nothing was queued: the ranks stay in step
  });
}

TEST_P(Conformance, ReportsItsNameRankAndSize) {
  each_rank([&](ProcessGroup& pg) {
    EXPECT_EQ(pg.backend_name(), GetParam().backend);
    EXPECT_EQ(pg.size(), GetParam().world);
    EXPECT_TRUE(pg.rank() >= 0 && pg.rank() < pg.size());
  });
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return case_name(info.param); });

}  // namespace
}  // namespace lockstep::comm::conformance
