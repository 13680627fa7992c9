// Runs and lineages in one run directory (issue 18, sections 2-4), on thread ranks: a new run
// never mixes with an earlier one, a rollback keeps the abandoned branch and rotates only the
// current lineage, and `--resume auto` continues the current lineage past a damaged newest
// checkpoint, naming it.
#include <gtest/gtest.h>

#include <fstream>

#include "lockstep/train/checkpoint.h"
#include "lockstep/train/lineage.h"
#include "lockstep/train/metrics.h"
#include "test_util.h"
#include "trainer_util.h"

namespace lockstep::train {
namespace {

namespace fs = std::filesystem;
using testing::synthetic;

std::vector<int64_t> logged_steps(const fs::path& run_dir) {
  std::vector<int64_t> steps;
  for (const auto& r : read_jsonl(run_dir / "metrics.jsonl"))
    if (r["kind"] == "step") steps.push_back(r["step"].get<int64_t>());
  return steps;
}

std::vector<int64_t> iota_steps(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

std::vector<int64_t> checkpoint_steps(const fs::path& ckpt_dir) {
  std::vector<int64_t> out;
  for (const auto& p : list_checkpoints(ckpt_dir))
    out.push_back(std::stoll(p.filename().string().substr(5)));
  return out;
}

std::string resumed_from(const fs::path& run_dir) {
  std::ifstream f(run_dir / "run.json");
  return nlohmann::json::parse(f).value("resumed_from", std::string());
}

TrainConfig config(const fs::path& run_dir, int64_t max_steps, int64_t every, int keep) {
  TrainConfig c = small_config(run_dir);
  c.max_steps = max_steps;
  c.checkpoint_every = every;
  c.checkpoint_keep = keep;
  c.checkpoint_async = false;
  c.schedule = "constant";  // the same learning rates whatever max_steps is (bitwise comparisons)
  return c;
}

// Section 2: `lockstep train` without --resume after a 8-step run kept the old checkpoints,
// and `--resume auto` then continued the old run, with metrics.jsonl holding both.
TEST(Lineage, NewRunInADirectoryHoldingARunIsRefusedOrOverwritten) {
  const auto dir = testing::fresh_dir("lineage");
  const data::Dataset tr = synthetic(100, 1);
  const fs::path run = dir / "run";
  train(1, config(run, 8, 2, 3), tr, nullptr);
  const auto before = testing::fingerprint(run);
  try {
    train(1, config(run, 4, 2, 3), tr, nullptr);
    FAIL() << "a new run in a directory holding one must be refused";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("already holds a run"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--resume auto"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--overwrite"), std::string::npos) << msg;
  }
  EXPECT_EQ(testing::fingerprint(run), before) << "a refused run must not touch the earlier one";

  TrainConfig fresh = config(run, 4, 2, 3);
  fresh.overwrite = true;
  train(1, fresh, tr, nullptr);
  EXPECT_EQ(checkpoint_steps(run / "checkpoints"), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(logged_steps(run), iota_steps(4)) << "metrics.jsonl holds only the new run";
  TrainConfig again = config(run, 6, 2, 3);
  again.resume = "auto";
  const RunOut r = train(1, again, tr, nullptr);
  EXPECT_EQ(r.result.steps, 6);
  EXPECT_EQ(fs::path(resumed_from(run)).filename(), "step-000000004")
      << "the new run's newest, not the old 8";
  EXPECT_EQ(logged_steps(run), iota_steps(6));
}

// Section 3: `--resume .../step-4` in a directory that also holds 8 and 12 (keep 3). The
// old rotation deleted the new 5 and 6 and kept the abandoned 8 and 12, and `--resume auto`
// then took the abandoned 12.
TEST(Lineage, RollbackKeepsTheAbandonedBranchAndRotatesOnlyTheCurrentLineage) {
  const auto dir = testing::fresh_dir("lineage");
  const data::Dataset tr = synthetic(100, 1);
  const fs::path run = dir / "run", ckpt = run / "checkpoints";
  train(2, config(run, 12, 4, 3), tr, nullptr);
  ASSERT_EQ(checkpoint_steps(ckpt), (std::vector<int64_t>{4, 8, 12}));
  const std::string old_lineage = load_checkpoint(ckpt / "step-000000012").manifest.lineage.id;

  TrainConfig back = config(run, 7, 1, 3);
  back.resume = (ckpt / "step-000000004").string();
  train(2, back, tr, nullptr);
  EXPECT_EQ(checkpoint_steps(ckpt), (std::vector<int64_t>{5, 6, 7, 8, 12}))
      << "rotation keeps the newest 3 of the new lineage and never touches the abandoned 8 and 12";
  const Checkpoint seven = load_checkpoint(ckpt / "step-000000007");
  EXPECT_NE(seven.manifest.lineage.id, old_lineage);
  ASSERT_EQ(seven.manifest.lineage.chain.size(), 1u);
  EXPECT_EQ(seven.manifest.lineage.chain[0].id, old_lineage);
  EXPECT_EQ(seven.manifest.lineage.chain[0].until, 4);
  EXPECT_EQ(latest_checkpoint(ckpt)->filename(), "step-000000007");

  TrainConfig cont = config(run, 9, 1, 3);
  cont.resume = "auto";
  const RunOut c = train(2, cont, tr, nullptr);
  EXPECT_EQ(fs::path(resumed_from(run)).filename(), "step-000000007");
  EXPECT_EQ(checkpoint_steps(ckpt), (std::vector<int64_t>{7, 8, 9, 12}));
  EXPECT_EQ(load_checkpoint(ckpt / "step-000000008").manifest.lineage.id,
            seven.manifest.lineage.id);
  const fs::path moved = ckpt / "branches" / old_lineage / "step-000000008";
  ASSERT_TRUE(fs::exists(moved))
      << "the abandoned 8 moved aside when the new lineage reached step 8";
  EXPECT_EQ(verify_checkpoint(moved), "");
  EXPECT_EQ(logged_steps(run), iota_steps(9))
      << "metrics.jsonl holds the current lineage's history once";

  // 4 steps of the first run, 3 of the rollback, 2 more: bitwise an uninterrupted 9-step run.
  const RunOut straight = train(2, config(dir / "straight", 9, 1, 3), tr, nullptr);
  EXPECT_EQ(c.weights, straight.weights);
}

// Section 4: a damaged newest checkpoint stopped `--resume auto` (and every restart) with the
// same CRC error while an intact older one existed.
TEST(Lineage, ResumeAutoPassesOverADamagedNewestCheckpointNamingIt) {
  const auto dir = testing::fresh_dir("lineage");
  const data::Dataset tr = synthetic(100, 1);
  const fs::path run = dir / "run", ckpt = run / "checkpoints";
  train(2, config(run, 8, 2, 3), tr, nullptr);
  testing::corrupt_byte(ckpt / "step-000000008" / "model.safetensors", 5);
  TrainConfig cont = config(run, 10, 2, 3);
  cont.resume = "auto";
  ::testing::internal::CaptureStderr();
  RunOut r;
  try {
    r = train(2, cont, tr, nullptr);
  } catch (...) {
    ::testing::internal::GetCapturedStderr();
    throw;
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.result.steps, 10);
  EXPECT_EQ(fs::path(resumed_from(run)).filename(), "step-000000006");
  EXPECT_NE(log.find("passing over a damaged checkpoint: " + (ckpt / "step-000000008").string()),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("CRC-32"), std::string::npos) << log;
  EXPECT_EQ(logged_steps(run), iota_steps(10));
  EXPECT_EQ(verify_checkpoint(ckpt / "step-000000008"), "")
      << "the same lineage's new step 8 replaced the bad one";
}

// Every checkpoint of the current lineage damaged: an error naming them, not a fresh start.
TEST(Lineage, NothingIntactToResumeIsAnErrorNamingEachCheckpoint) {
  const auto dir = testing::fresh_dir("lineage");
  const data::Dataset tr = synthetic(100, 1);
  const fs::path run = dir / "run", ckpt = run / "checkpoints";
  train(1, config(run, 4, 2, 3), tr, nullptr);
  for (const char* s : {"step-000000002", "step-000000004"})
    testing::corrupt_byte(ckpt / s / "model.safetensors", 5);
  TrainConfig cont = config(run, 6, 2, 3);
  cont.resume = "auto";
  try {
    train(1, cont, tr, nullptr);
    FAIL();
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no intact checkpoint"), std::string::npos) << msg;
    EXPECT_NE(msg.find("step-000000002"), std::string::npos) << msg;
    EXPECT_NE(msg.find("step-000000004"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace lockstep::train
