// The alpha-beta formulas against cases computed by hand (the arithmetic is in each comment).
#include <gtest/gtest.h>

#include "lockstep/core/error.h"
#include "lockstep/plan/calibrate.h"
#include "lockstep/plan/cost_model.h"
#include "lockstep/plan/predict.h"

namespace lockstep::plan {
namespace {

constexpr double kRel = 1e-12;  // the model is closed-form arithmetic: only rounding differs

Topology one_node(int p, double alpha, double beta) {
  return {1, p, {alpha, beta}, {}};
}

TEST(CostModel, RingOnOneNode) {
  // 2(p-1)(a + n/(p b)) = 6 * (1e-5 + 1e6/1e9) = 6.06e-3
  EXPECT_NEAR(allreduce_seconds(Algo::ring, 4e6, one_node(4, 1e-5, 1e9)), 6.06e-3, 6.06e-3 * kRel);
}

TEST(CostModel, RingAcrossNodesIsBoundByTheSlowerLink) {
  // 2 nodes x 2: each of 6 steps moves 1e6 B; max(1e-6 + 1e6/1e10, 1e-4 + 1e6/1e9) = 1.1e-3
  const Topology t{2, 2, {1e-6, 1e10}, {1e-4, 1e9}};
  EXPECT_NEAR(allreduce_seconds(Algo::ring, 4e6, t), 6.6e-3, 6.6e-3 * kRel);
  // one worker per node: only the inter-node link, 2(p-1)(a + n/(p b)) = 2 * (1e-4 + 2e6/1e9)
  const Topology u{2, 1, {}, {1e-4, 1e9}};
  EXPECT_NEAR(allreduce_seconds(Algo::ring, 4e6, u), 4.2e-3, 4.2e-3 * kRel);
}

TEST(CostModel, HalvingDoublingOnOneNode) {
  // 2 log2(p) a + 2 (p-1)/p n/b = 6e-5 + 2 * 7/8 * 8e6/1e9 = 0.01406
  EXPECT_NEAR(allreduce_seconds(Algo::halving_doubling, 8e6, one_node(8, 1e-5, 1e9)), 0.01406,
              0.01406 * kRel);
}

TEST(CostModel, HalvingDoublingSharesTheNicOffNode) {
  // 2 nodes x 2, n = 4e6: distance 2 (off-node, both workers through one NIC): 1e-4 + 2*2e6/1e9;
  // distance 1 (on-node): 1e-6 + 1e6/1e10. Each twice (halving, then doubling).
  const Topology t{2, 2, {1e-6, 1e10}, {1e-4, 1e9}};
  const double expect = 2 * (1e-4 + 4e-3) + 2 * (1e-6 + 1e-4);
  EXPECT_NEAR(allreduce_seconds(Algo::halving_doubling, 4e6, t), expect, expect * kRel);
}

TEST(CostModel, HalvingDoublingFoldsExtraRanks) {
  // p = 6 on one node: 2 exchanges of the whole buffer, then halving-doubling on 4.
  const double n = 4e6, a = 1e-5, b = 1e9;
  const double expect = 2 * (a + n / b) + 2 * 2 * a + 2 * 0.75 * n / b;
  EXPECT_NEAR(allreduce_seconds(Algo::halving_doubling, n, one_node(6, a, b)), expect,
              expect * kRel);
}

TEST(CostModel, Hierarchical) {
  // 4 nodes x 2, n = 8e6. intra reduce-scatter (k-1)(a + n/(k b)) = 1e-6 + 4e6/1e10 = 4.01e-4,
  // twice (and the all-gather); inter 2(N-1)(a + n/(N b)) = 6 * (1e-4 + 2e-3) = 0.0126.
  const Topology t{4, 2, {1e-6, 1e10}, {1e-4, 1e9}};
  EXPECT_NEAR(allreduce_seconds(Algo::hierarchical, 8e6, t), 0.013402, 0.013402 * kRel);
  // One worker per node: the ring over nodes.
  const Topology u{4, 1, {}, {1e-4, 1e9}};
  EXPECT_DOUBLE_EQ(allreduce_seconds(Algo::hierarchical, 8e6, u),
                   allreduce_seconds(Algo::ring, 8e6, u));
}

TEST(CostModel, AutoFollowsTheNativeBackend) {
  const Topology t = one_node(4, 1e-5, 1e9);
  // 1000 B: recursive doubling, log2(4) = 2 exchanges of the whole buffer: 2 (1e-5 + 1e-6)
  EXPECT_NEAR(allreduce_seconds(Algo::lockstep_auto, 1000, t), 2.2e-5, 2.2e-5 * kRel);
  EXPECT_DOUBLE_EQ(allreduce_seconds(Algo::lockstep_auto, 4e6, t),
                   allreduce_seconds(Algo::ring, 4e6, t));
  EXPECT_EQ(allreduce_seconds(Algo::ring, 4e6, one_node(1, 1e-5, 1e9)), 0.0);
}

TEST(CostModel, OverlapOnOneStreamInReadyOrder) {
  // p = 2 ring, a = 0, n = 1e6, b = 1e9: 2 * 0.5e6/1e9 = 1 ms per bucket. Ready at 0.5, 1.0 and
  // 4.0 ms, backward ends at 4.5 ms: b0 0.5-1.5, b1 1.5-2.5 (waits for b0), b2 4.0-5.0.
  const Topology t = one_node(2, 0, 1e9);
  const Overlap o =
      simulate_overlap({{1e6, 0.5e-3}, {1e6, 1.0e-3}, {1e6, 4.0e-3}}, 4.5e-3, t, Algo::ring);
  EXPECT_NEAR(o.comm, 3e-3, 1e-15);
  EXPECT_NEAR(o.comm_end, 5e-3, 1e-15);
  EXPECT_NEAR(o.exposed, 0.5e-3, 1e-15);
  EXPECT_NEAR(o.hidden_fraction(), 1 - 0.5 / 3, 1e-12);
  // Everything ready at once at 0 with backward ending at 1 ms: 3 ms of work, 2 ms exposed.
  const Overlap q = simulate_overlap({{1e6, 0}, {1e6, 0}, {1e6, 0}}, 1e-3, t, Algo::ring);
  EXPECT_NEAR(q.exposed, 2e-3, 1e-15);
  // Communication that ends before backward is fully hidden.
  EXPECT_EQ(simulate_overlap({{1e6, 0}}, 5e-3, t, Algo::ring).exposed, 0.0);
}

TEST(CostModel, ZeroBandwidthIsAClearError) {
  Topology t{2, 1, {}, {1e-5, 0}};
  try {
    check_topology(t, "--inter-gbit");
    FAIL() << "zero inter-node bandwidth was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--inter-gbit: the inter-node bandwidth is 0"),
              std::string::npos)
        << e.what();
  }
  t.inter.beta = 1e9, t.inter.alpha = -1;
  EXPECT_THROW(check_topology(t, "--inter-latency-us"), InvalidArgument);
  EXPECT_THROW(check_topology({0, 1, {}, {}}, "--nodes"), InvalidArgument);
  EXPECT_THROW(parse_algo("butterfly"), InvalidArgument);
  EXPECT_EQ(parse_algo("hd"), Algo::halving_doubling);
}

TEST(Calibration, RecoversAlphaAndBetaOfARing) {
  // 4 ranks, alpha 20 us, beta 1e9 B/s: t = 6 * 20e-6 + 1.5 n / 1e9, as a bench table prints it.
  std::string table = "#  size(B) count type redop time(us) algbw busbw #wrong\n";
  for (double n = 4096; n <= 64 << 20; n *= 4)
    table += std::to_string(int64_t(n)) + " " + std::to_string(int64_t(n / 4)) + " float32 sum " +
             std::to_string((6 * 20e-6 + 1.5 * n / 1e9) * 1e6) + " 0 0 0\n";
  const Calibration c = fit_ring(parse_bench_table(table, "table"), 4, "test");
  EXPECT_NEAR(c.link.alpha, 20e-6, 20e-6 * 1e-4);  // the table prints 6 decimals of a microsecond
  EXPECT_NEAR(c.link.beta, 1e9, 1e9 * 1e-4);
  EXPECT_LT(c.max_rel_error, 1e-4);
  // nccl-tests' layout (bench_collectives since 4e7fe86): a root column, and N/A out of place
  // for an all-reduce, so the in-place time counts.
  const std::vector<Sample> nccl = parse_bench_table(
      "#  size count type redop root time algbw busbw #wrong time algbw busbw #wrong memcpy\n"
      "   4096  1024 float sum -1  N/A N/A N/A N/A  2357.59 0.002 0.002 0  129.7\n"
      "   8192  2048 float sum -1  12.5 0.6 0.6 0  2426.07 0.003 0.003 0  135.6\n",
      "nccl.txt");
  ASSERT_EQ(nccl.size(), 2u);
  EXPECT_EQ(nccl[0].bytes, 4096);
  EXPECT_NEAR(nccl[0].seconds, 2357.59e-6, 1e-12);
  EXPECT_NEAR(nccl[1].seconds, 12.5e-6, 1e-12);  // out of place, where it has a number
  // Two tables in one text: each header says whether its table has a root column (before,
  // the first root header held for the rest, and the second table's time read its algbw).
  const std::vector<Sample> two = parse_bench_table(
      "#  size count type redop root time algbw busbw #wrong time algbw busbw #wrong\n"
      "#   (B) (elements)              (us) (GB/s) (GB/s)      (us) (GB/s) (GB/s)\n"
      "   4096  1024 float sum -1  N/A N/A N/A N/A  20.5 0.2 0.2 0\n"
      "# Avg bus bandwidth    : 0.2\n"
      "#  size count type redop time algbw busbw #wrong time algbw busbw #wrong\n"
      "   8192  2048 float sum  30.25 0.27 0.27 0  31.0 0.26 0.26 0\n",
      "two.txt");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_NEAR(two[0].seconds, 20.5e-6, 1e-12);
  EXPECT_EQ(two[1].bytes, 8192);
  EXPECT_NEAR(two[1].seconds, 30.25e-6, 1e-12);
  // A table without rows, and times that do not grow with size, are refused.
  EXPECT_THROW(parse_bench_table("# nothing here\n", "empty.txt"), DataError);
  EXPECT_THROW(fit_ring({{4096, 1e-3}, {1 << 20, 1e-3}, {4 << 20, 0.9e-3}}, 2, "flat"), DataError);
  EXPECT_THROW(fit_ring({{4096, 1e-3}, {1 << 20, 2e-3}}, 1, "one rank"), InvalidArgument);
}

}  // namespace
}  // namespace lockstep::plan
