// Profiles: read back from JSON and from Chrome traces, re-cut into other bucket sizes,
// predicted, and refused with a clear error where they cannot stand for a topology.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "lockstep/core/error.h"
#include "lockstep/plan/predict.h"
#include "lockstep/plan/profile.h"

namespace lockstep::plan {
namespace {

namespace fs = std::filesystem;

Profile two_buckets() {
  Profile p;
  p.model = "fmnist-mlp", p.source = "measured", p.world_size = 2;
  p.bucket_cap_bytes = 2e6, p.first_bucket_bytes = 1e6;
  p.forward = 1e-3, p.backward = 3e-3, p.optimizer = 0.5e-3, p.other = 0.5e-3;
  p.buckets = {{2e6, 1.0}, {2e6, 3.0}};
  return p;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Profile, RebucketReadsTheCumulativeCurve) {
  // Bytes ready: 0 at 0 s, 2e6 at 1 s, 4e6 at 3 s, linear between. 1e6 buckets end at
  // 1e6 (0.5 s), 2e6 (1 s), 3e6 (2 s), 4e6 (3 s).
  const std::vector<Bucket> b = rebucket(two_buckets(), 1e6);
  ASSERT_EQ(b.size(), 4u);
  const double ready[] = {0.5, 1.0, 2.0, 3.0};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(b[i].bytes, 1e6);
    EXPECT_NEAR(b[i].ready, ready[i], 1e-12) << i;
  }
  // Its own cap: the recorded buckets as they are.
  EXPECT_EQ(rebucket(two_buckets(), 2e6).size(), 2u);
  // A cap above everything: a first bucket of 1e6 (first_bucket_bytes), then the rest at 3 s.
  const std::vector<Bucket> c = rebucket(two_buckets(), 64e6);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_NEAR(c[1].bytes, 3e6, 1e-6);
  EXPECT_NEAR(c[1].ready, 3.0, 1e-12);
}

TEST(Profile, JsonRoundTripAndMissingKeys) {
  const Profile p = two_buckets();
  nlohmann::json j = p.to_json();
  const Profile q = profile_from_json(j, "p.json");
  EXPECT_EQ(q.model, "fmnist-mlp");
  EXPECT_EQ(q.buckets.size(), 2u);
  EXPECT_DOUBLE_EQ(q.compute(), p.compute());
  j.erase("backward_s");
  EXPECT_NE(message_of([&] {
              profile_from_json(j, "p.json");
            }).find("p.json: profile key 'backward_s' is missing"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              profile_from_json(nlohmann::json::object(), "x.json");
            }).find("not a lockstep profile"),
            std::string::npos);
}

// What `lockstep train --profile` passes in for a two-rank run.
Profile two_rank_meta() {
  Profile meta;
  meta.model = "fmnist-mlp", meta.world_size = 2, meta.bucket_cap_bytes = 25 << 20;
  return meta;
}

fs::path fresh_dir(const std::string& tag) {
  const fs::path dir = fs::temp_directory_path() / (tag + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

void write_trace(const fs::path& path, int steps, double step_us, double slow_us = 0,
                 double wait_us = 0) {
  // forward 100 us, backward 300 us, buckets launched 100 and 250 us into backward, finalize
  // 50 us, optimizer 20 us; one step every `step_us`. A straggler's backward takes `slow_us`
  // longer; a rank waiting for one spends `wait_us` longer in finalize.
  std::ofstream f(path);
  f << "{\"traceEvents\":[{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0}";
  for (int s = 0; s < steps; ++s) {
    const double t = 1000 + s * step_us, b = t + slow_us;  // b: backward's end - 300
    auto ev = [&](const char* name, double ts, double dur, int64_t bytes) {
      f << ",{\"name\":\"" << name << "\",\"ph\":\"X\",\"ts\":" << ts << ",\"dur\":" << dur;
      if (bytes > 0) f << ",\"args\":{\"bytes\":" << bytes << "}";
      f << "}";
    };
    ev("forward", t, 100, 0);
    ev("backward", t + 100, 300 + slow_us, 0);
    ev("ready p2", t + 150, 0, 3072);  // parameters become final in reverse order
    ev("ready p1", t + 200, 0, 1024);
    ev("ready p0", b + 350, 0, 1024);
    ev("allreduce b0", t + 200, 150, 4096);
    ev("allreduce b1", b + 350, 90, 1024);
    ev("finalize", b + 400, 50 + wait_us, 0);
    ev("optimizer", b + 450 + wait_us, 20, 0);
  }
  f << "]}\n";
}

TEST(Profile, FromTraces) {
  const fs::path dir = fresh_dir("plan_test_");
  write_trace(dir / "t0.json", 8, 1000);
  write_trace(dir / "t1.json", 8, 1000);
  const Profile meta = two_rank_meta();
  const Profile p = profile_from_traces({dir / "t0.json", dir / "t1.json"}, meta);
  EXPECT_EQ(p.steps.size(), 4u);  // 8 - 3 skipped - the last
  EXPECT_NEAR(p.forward, 100e-6, 1e-12);
  EXPECT_NEAR(p.backward, 300e-6, 1e-12);
  EXPECT_NEAR(p.step, 1000e-6, 1e-12);
  EXPECT_NEAR(p.other, (1000 - 100 - 300 - 50 - 20) * 1e-6, 1e-12);
  ASSERT_EQ(p.buckets.size(), 2u);
  EXPECT_EQ(p.buckets[0].bytes, 4096);
  EXPECT_NEAR(p.buckets[0].ready, 100e-6, 1e-12);
  EXPECT_NEAR(p.buckets[1].ready, 250e-6, 1e-12);
  // Per parameter, in ready order, 50, 100 and 250 us into backward. Cut at 2048 bytes as DDP
  // cuts: p2 (3072 B) fills the first bucket alone; p1 + p0 make the second, ready with p0.
  ASSERT_EQ(p.grads.size(), 3u);
  EXPECT_NEAR(p.grads[0].ready, 50e-6, 1e-12);
  EXPECT_EQ(p.grads[0].bytes, 3072);
  Profile q = p;
  q.first_bucket_bytes = 1 << 20;
  const std::vector<Bucket> b = rebucket(q, 2048);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].bytes, 3072);
  EXPECT_NEAR(b[0].ready, 50e-6, 1e-12);
  EXPECT_EQ(b[1].bytes, 2048);
  EXPECT_NEAR(b[1].ready, 250e-6, 1e-12);
  EXPECT_EQ(profile_from_json(p.to_json(), "p.json").grads.size(), 3u);
  // Too short a run says how to fix it.
  write_trace(dir / "short.json", 3, 1000);
  EXPECT_NE(message_of([&] {
              profile_from_traces({dir / "short.json"}, meta);
            }).find("raise --max-steps"),
            std::string::npos);
  fs::remove_all(dir);
}

// Two ranks' traces in `dir`: rank 1's backward is 200 us longer, and rank 0 waits those
// 200 us in finalize.
Profile straggler_profile(const fs::path& dir, int steps0, int steps1) {
  write_trace(dir / "t0.json", steps0, 1000, 0, 200);
  write_trace(dir / "t1.json", steps1, 1000, 200, 0);
  return profile_from_traces({dir / "t0.json", dir / "t1.json"}, two_rank_meta());
}

// Every step waits for its slowest rank: the profile takes, per step, the rank that computed
// longest, not medians over all ranks' samples. Rank 1's backward is 200 us longer and rank 0
// waits those 200 us in finalize; before, the median backward of the 8 samples was 400 us.
TEST(Profile, FromTracesTakesTheSlowestRankOfEachStep) {
  const fs::path dir = fresh_dir("plan_test_slow_");
  const Profile p = straggler_profile(dir, 8, 8);
  EXPECT_NEAR(p.backward, 500e-6, 1e-12);
  EXPECT_NEAR(p.finalize, 50e-6, 1e-12);
  EXPECT_NEAR(p.step, 1000e-6, 1e-12);
  ASSERT_EQ(p.buckets.size(), 2u);
  EXPECT_NEAR(p.buckets[1].ready, 450e-6, 1e-12);  // rank 1's last bucket
  fs::remove_all(dir);
}

// The recorded steps are the samples the medians come from: the slowest rank's, and only the
// steps every rank recorded. Before, they were rank 0's (backward 300 us, 5 steps here).
TEST(Profile, FromTracesKeepsTheStepsItTookMediansOf) {
  const fs::path dir = fresh_dir("plan_test_keep_");
  const Profile p = straggler_profile(dir, 9, 8);
  ASSERT_EQ(p.steps.size(), 4u);  // rank 1: 8 - 3 skipped - the last
  for (const StepSample& s : p.steps) EXPECT_NEAR(s.backward, 500e-6, 1e-12);
  EXPECT_NEAR(p.backward, 500e-6, 1e-12);
  fs::remove_all(dir);
}

// No traces at all is refused with what to pass (before: front() of an empty vector).
TEST(Profile, FromNoTracesIsRefusedClearly) {
  const Profile meta = two_rank_meta();
  EXPECT_NE(message_of([&] { profile_from_traces({}, meta); }).find("one Chrome trace per rank"),
            std::string::npos);
  EXPECT_THROW(profile_from_traces({}, meta), DataError);
}

TEST(Profile, PredictAndSweep) {
  Profile p = two_buckets();
  p.buckets = {{1e6, 1e-3}, {1e6, 3e-3}};  // backward is 3 ms
  p.bucket_cap_bytes = 1e6;
  // 2 nodes x 1, ring: 2 (0 + 0.5e6/1e9) = 1 ms per bucket: 1-2 ms, 3-4 ms: 1 ms exposed, and
  // the 24-byte stats all-reduce: doubling with 2 ranks, one exchange: 1e-5 + 24/1e9.
  const Topology t{2, 1, {}, {1e-5, 1e9}};
  const double b0 = 2 * (1e-5 + 0.5e6 / 1e9);
  const Prediction r = predict(p, t, Algo::ring, 1e6);
  const double stats = 1e-5 + 24 / 1e9;
  EXPECT_NEAR(r.exposed, (3e-3 + b0 - 3e-3) + stats, 1e-12);
  EXPECT_NEAR(r.step, 5e-3 + r.exposed, 1e-12);
  EXPECT_NEAR(r.efficiency, 5e-3 / r.step, 1e-12);
  const std::vector<Row> rows = sweep(p, t, Algo::ring, 1e6, {1, 2, 4});
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].at_cap.efficiency, 1.0);  // one worker: nothing to reduce
  EXPECT_LE(rows[2].at_best.step, rows[2].at_cap.step);
  EXPECT_LT(rows[2].at_cap.efficiency, rows[1].at_cap.efficiency);
}

TEST(Profile, BadInputIsRefusedClearly) {
  const Profile p = two_buckets();
  EXPECT_NE(message_of([&] {
              check_profile_model(p, "char-gpt", "mlp.json");
            }).find("mlp.json was recorded for model 'fmnist-mlp', not 'char-gpt'"),
            std::string::npos);
  EXPECT_NO_THROW(check_profile_model(p, "fmnist-mlp", "mlp.json"));
  const Topology eight{4, 8, {1e-6, 1e10}, {1e-5, 1e9}};
  EXPECT_NE(message_of([&] { check_profile_fits(p, eight, false); }).find("--nproc 8"),
            std::string::npos);
  EXPECT_NO_THROW(check_profile_fits(p, eight, true));
  EXPECT_NO_THROW(check_profile_fits(p, {4, 2, {1e-6, 1e10}, {1e-5, 1e9}}, false));
  EXPECT_NE(message_of([] { builtin_profile("gpt-7b", 0, 1e14, 4, 25 << 20); }).find("gpt-350m"),
            std::string::npos);
}

TEST(Profile, BuiltinSpreadsGradientsThroughBackward) {
  // gpt-25m: 6 * 25e6 * 16384 FLOPs at 1.25e14/s = 19.66 ms; 1e8 gradient bytes in 25 MiB
  // buckets after a first of 1 MiB, ready in proportion to the bytes before them.
  const Profile p = builtin_profile("gpt-25m", 0, 1.25e14, 4, 25 << 20);
  EXPECT_NEAR(p.forward + p.backward, 6 * 25e6 * 16384 / 1.25e14, 1e-12);
  EXPECT_NEAR(p.grad_bytes(), 1e8, 1);
  EXPECT_EQ(p.buckets.size(), 5u);  // 1 MiB, 3 x 25 MiB, the rest
  EXPECT_NEAR(p.buckets[1].ready, p.backward * (1 + 25.0) * (1 << 20) / 1e8, 1e-9);
  EXPECT_NEAR(p.buckets.back().ready, p.backward, 1e-12);
}

}  // namespace
}  // namespace lockstep::plan
