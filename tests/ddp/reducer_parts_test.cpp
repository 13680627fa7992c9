// The reducer's small pieces on their own: bucket assignment, storage binding, readiness,
// timeline paths, PowerSGD's orthonormalisation. No communication.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "lockstep/core/error.h"
#include "lockstep/ddp/bucket.h"
#include "lockstep/ddp/powersgd_hook.h"
#include "lockstep/ddp/ready_tracker.h"
#include "lockstep/ddp/timeline.h"

namespace lockstep::ddp {
namespace {

// A ParamSource over one flat gradient buffer laid out in a given order.
class FlatSource : public ParamSource {
 public:
  FlatSource(std::vector<size_t> numel, std::vector<size_t> layout) : numel_(numel), off_(numel.size()) {
    size_t total = 0;
    for (size_t i : layout) {
      off_[i] = total;
      total += numel[i];
    }
    grads_.assign(total, 0.0f);
    values_.assign(total, 0.0f);
    for (size_t i = 0; i < numel.size(); ++i)
      info_.push_back({"p" + std::to_string(i), {int64_t(numel[i])}, DType::f32});
  }
  size_t num_params() const override { return numel_.size(); }
  const TensorInfo& param_info(size_t i) const override { return info_[i]; }
  std::span<float> value(size_t i) override { return {values_.data() + off_[i], numel_[i]}; }
  std::span<float> grad(size_t i) override { return {grads_.data() + off_[i], numel_[i]}; }

 private:
  std::vector<size_t> numel_, off_;
  std::vector<float> grads_, values_;
  std::vector<TensorInfo> info_;
};

TEST(BucketPlan, FirstBucketSmallThenCap) {
  // 5 parameters of 100 floats (400 B) each, reverse order of use.
  std::vector<size_t> numel(5, 100), order = {4, 3, 2, 1, 0};
  BucketPlan p = plan_buckets(order, numel, {.bucket_cap_bytes = 1000, .first_bucket_bytes = 400});
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p.buckets[0], (std::vector<size_t>{4}));
  EXPECT_EQ(p.buckets[1], (std::vector<size_t>{3, 2, 1}));
  EXPECT_EQ(p.buckets[2], (std::vector<size_t>{0}));
  EXPECT_EQ(p.bucket_of[2], 1u);
}

TEST(BucketPlan, DefaultsPutSmallModelInFewBuckets) {
  std::vector<size_t> numel = {10, 200000, 10, 300000};  // ~2 MB in total
  std::vector<size_t> order = {3, 2, 1, 0};
  BucketPlan p = plan_buckets(order, numel, {});
  ASSERT_EQ(p.size(), 2u);  // first bucket closes past 1 MiB, the rest fits 25 MiB
  EXPECT_EQ(p.buckets[0], (std::vector<size_t>{3}));
}

TEST(BucketPlan, FirstBucketClosesBeforeAParameterThatWouldOverflowIt) {
  // fmnist-mlp's shape: small last layers, then a first layer larger than the first cap.
  std::vector<size_t> numel = {401408, 512, 131072, 256, 2560, 10};
  std::vector<size_t> order = {5, 4, 3, 2, 1, 0};
  BucketPlan p = plan_buckets(order, numel, {});
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p.buckets[0], (std::vector<size_t>{5, 4, 3, 2, 1}));  // 538 KB, under 1 MiB
  EXPECT_EQ(p.buckets[1], (std::vector<size_t>{0}));
  // Later buckets keep PyTorch's rule: closed once they hold at least the cap.
  BucketPlan q = plan_buckets(order, numel, {.bucket_cap_bytes = 1000, .first_bucket_bytes = 40});
  EXPECT_EQ(q.buckets[0], (std::vector<size_t>{5}));
  EXPECT_EQ(q.buckets[1], (std::vector<size_t>{4}));
}

TEST(BucketPlan, RejectsRepeatsAndWrongCounts) {
  std::vector<size_t> numel = {1, 1};
  std::vector<size_t> dup = {0, 0}, short_order = {0};
  EXPECT_THROW(plan_buckets(dup, numel, {}), InvalidArgument);
  EXPECT_THROW(plan_buckets(short_order, numel, {}), InvalidArgument);
}

TEST(BucketStorage, ContiguousBucketsAreViewsOthersAreStaged) {
  FlatSource src({3, 4, 5}, {2, 1, 0});  // layout: p2 p1 p0
  std::vector<size_t> numel = {3, 4, 5};
  std::vector<size_t> order = {2, 1, 0};
  BucketPlan same = plan_buckets(order, numel, {.bucket_cap_bytes = 1 << 20, .first_bucket_bytes = 1 << 20});
  BucketStorage st;
  st.bind(same, src);
  ASSERT_EQ(st.size(), 1u);
  EXPECT_TRUE(st.view(0).zero_copy);
  EXPECT_EQ(st.view(0).data.data(), src.grad(2).data());
  EXPECT_EQ(st.view(0).offsets, (std::vector<size_t>{0, 5, 9}));

  // Buckets {2, 0} and {1}: p2 and p0 are not adjacent, so that bucket is staged.
  BucketPlan split;
  split.buckets = {{2, 0}, {1}};
  split.bucket_of = {0, 1, 0};
  st.bind(split, src);
  EXPECT_FALSE(st.view(0).zero_copy);
  EXPECT_TRUE(st.view(1).zero_copy);
  EXPECT_EQ(st.copied_buckets(), 1u);
  src.grad(0)[1] = 7.0f;
  st.copy_in(0, src);
  EXPECT_EQ(st.view(0).data[st.view(0).offsets[1] + 1], 7.0f);
  st.view(0).data[0] = 3.0f;
  st.copy_out(0, src);
  EXPECT_EQ(src.grad(2)[0], 3.0f);
}

TEST(ReadyTracker, CompletesBucketsAndListsMissing) {
  BucketPlan p;
  p.buckets = {{2, 1}, {0}};
  p.bucket_of = {1, 0, 0};
  ReadyTracker t;
  t.reset(p);
  EXPECT_EQ(t.mark(2), ReadyTracker::kNone);
  EXPECT_EQ(t.mark(1), 0u);
  EXPECT_TRUE(t.bucket_ready(0));
  EXPECT_FALSE(t.bucket_ready(1));
  EXPECT_EQ(t.unmarked(), (std::vector<size_t>{0}));
  EXPECT_THROW(t.mark(1), InvalidArgument);
  EXPECT_THROW(t.mark(9), InvalidArgument);
  EXPECT_EQ(std::vector<size_t>(t.arrival_order().begin(), t.arrival_order().end()), (std::vector<size_t>{2, 1}));
  t.start_iteration();
  EXPECT_EQ(t.unmarked().size(), 3u);
}

TEST(Timeline, RankPaths) {
  EXPECT_EQ(Timeline::rank_path("t.json", 1, 2), "t.rank1.json");
  EXPECT_EQ(Timeline::rank_path("t.json", 0, 1), "t.json");
  EXPECT_EQ(Timeline::rank_path("out/r{rank}.json", 3, 4), "out/r3.json");
  EXPECT_EQ(Timeline::rank_path("dir.x/trace", 2, 4), "dir.x/trace.rank2");
}

TEST(PowerSgd, OrthonormalizeColumns) {
  const size_t n = 6, r = 3;
  std::vector<float> p(n * r);
  for (size_t i = 0; i < p.size(); ++i) p[i] = float((i * 7 + 3) % 11) - 5.0f;
  orthonormalize_columns(p.data(), n, r);
  for (size_t a = 0; a < r; ++a)
    for (size_t b = 0; b < r; ++b) {
      double dot = 0;
      for (size_t i = 0; i < n; ++i) dot += double(p[i * r + a]) * p[i * r + b];
      EXPECT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-5) << a << "," << b;
    }
}

}  // namespace
}  // namespace lockstep::ddp
