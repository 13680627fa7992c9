// Runs and lineages through the real `lockstep` program (label multiproc, issue 18): a
// restart continues the newest intact checkpoint of the lineage its job started (not the
// --resume PATH that rotation deleted, not a damaged newest one), a new run in a used run
// directory is refused before any step, and `lockstep checkpoints list|verify|rollback`.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>

#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/safetensors.h"
#include "rel_util.h"

namespace lockstep::reliability {
namespace {

using Overrides = std::map<std::string, std::string>;
constexpr int64_t kSteps = 120;  // 3072 samples, 2 workers, batch 16: 96 steps an epoch
const Millis kTimeout{std::chrono::seconds(90)};

class LineageCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    write_synthetic_fmnist(tmp_->path / "data", 3072, 256, 5);
    auto job = train("reference", {{"max_steps", std::to_string(kSteps)}}, {});
    ASSERT_TRUE(job->wait(kTimeout)) << job->out();
    ASSERT_TRUE(job->status().ok()) << job->out();
  }
  static void TearDownTestSuite() { delete tmp_; }
  static fs::path dir(const std::string& name) { return tmp_->path / name; }

  // `lockstep train --nproc 2` into dir(name) with a config of `o` (checkpoints every 8,
  // written synchronously, the newest 2 kept) and more flags.
  static std::unique_ptr<Job> train(const std::string& name, Overrides o,
                                    std::vector<std::string> flags) {
    Overrides kv = {
        {"checkpoint_every", "8"}, {"checkpoint_keep", "2"}, {"checkpoint_async", "false"}};
    for (auto& [k, v] : o) kv[k] = v;
    fs::create_directories(dir(name));
    const fs::path cfg = tmp_->path / (name + ".toml");
    write_text(cfg, small_train_config(tmp_->path / "data", dir(name), kv));
    std::vector<std::string> argv = {LOCKSTEP_BIN, "train",   "--config",
                                     cfg.string(), "--nproc", "2"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return std::make_unique<Job>(argv);
  }
  static std::unique_ptr<Job> cli(std::vector<std::string> args) {
    args.insert(args.begin(), LOCKSTEP_BIN);
    auto job = std::make_unique<Job>(args);
    EXPECT_TRUE(job->wait(kTimeout)) << job->out();
    return job;
  }
  static TempDir* tmp_;
};
TempDir* LineageCli::tmp_ = nullptr;

std::map<std::string, std::vector<uint8_t>> model_tensors(const fs::path& run_dir) {
  const fs::path f = *train::latest_checkpoint(run_dir / "checkpoints") / "model.safetensors";
  std::map<std::string, std::vector<uint8_t>> out;
  for (auto& t :
       train::decode_safetensors(train::read_file_bounded(f, uint64_t(1) << 30), f.string())
           .tensors)
    out[t.name] = t.bytes;
  return out;
}

void flip_last_byte(const fs::path& file) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-1, std::ios::end);
  const char c = char(f.get());
  f.seekp(-1, std::ios::end);
  f.put(char(c ^ 0x5a));
}

// `--resume .../step-12 --max-restarts 1`: rotation deletes step 12 at step 24; at step >= 34
// both workers are stopped, the newest checkpoint is damaged and rank 1 is killed. Before,
// the restart resumed step 12 again ("no checkpoint found") and would have stopped on the
// damaged one; now it passes over the damaged one, naming it, and resumes the one before.
TEST_F(LineageCli, RestartResumesTheNewestIntactCheckpointNotTheResumedPathRotationDeleted) {
  const fs::path ckpt = dir("restart") / "checkpoints";
  auto first = train("restart", {{"max_steps", "12"}, {"checkpoint_every", "4"}}, {});
  ASSERT_TRUE(first->wait(kTimeout) && first->status().ok()) << first->out();
  const fs::path resumed = ckpt / "step-000000012";
  ASSERT_TRUE(fs::exists(resumed));
  auto job = train("restart", {{"max_steps", std::to_string(kSteps)}},
                   {"--resume", resumed.string(), "--max-restarts", "1"});
  const auto r0 = find_worker(job->pid(), 0, "lockstep", std::chrono::seconds(30));
  const auto r1 = find_worker(job->pid(), 1, "lockstep", std::chrono::seconds(30));
  ASSERT_TRUE(r0 && r1) << job->out();
  const auto until = Deadline::after(std::chrono::seconds(60));
  int64_t at = 0;
  while ((at = last_logged_step(dir("restart") / "metrics.jsonl")) < 34 && !until.expired())
    ::usleep(500);
  ::kill(*r0, SIGSTOP);
  ::kill(*r1, SIGSTOP);
  ASSERT_LT(last_logged_step(dir("restart") / "metrics.jsonl"), kSteps) << "training ended first";
  EXPECT_FALSE(fs::exists(resumed)) << "rotation deleted the checkpoint --resume named";
  const fs::path newest = *train::latest_checkpoint(ckpt);
  flip_last_byte(newest / "model.safetensors");
  const double injected = job->elapsed();
  ::kill(*r1, SIGKILL);
  ::kill(*r0, SIGCONT);

  ASSERT_TRUE(job->wait(kTimeout)) << job->out();
  const std::string out = job->out();
  EXPECT_TRUE(job->status().ok()) << out;
  EXPECT_TRUE(job->find_line("restarting all workers (restart 1 of 1)")) << out;
  const auto passed = job->find_line("passing over a damaged checkpoint: " + newest.string());
  EXPECT_TRUE(passed) << out;
  const auto picked = job->find_line("restart 1 of this job: resuming ");
  ASSERT_TRUE(picked) << out;
  EXPECT_NE(picked->second.find("step-0000000"), std::string::npos);
  const StepLog log = read_step_log(dir("restart") / "metrics.jsonl");
  EXPECT_EQ(log.steps, read_step_log(dir("reference") / "metrics.jsonl").steps);
  EXPECT_TRUE(model_tensors(dir("restart")) == model_tensors(dir("reference")))
      << "12 steps, 12 -> the kill, the restart to the end: bitwise the uninterrupted run";
  report("restart after --resume PATH was rotated away, newest checkpoint damaged",
         str_cat("--resume step-12 --max-restarts 1 (checkpoint every 8, keep 2); at step ", at,
                 " workers stopped, ", newest.filename().string(), " damaged, rank 1 killed"),
         str_cat("\"", line_with(passed ? passed->second : "", "passing over", 120), "\"; \"",
                 line_with(picked->second, "restart 1", 150), "\"; steps 1..", kSteps,
                 " logged once, final model bitwise the uninterrupted run's"),
         passed ? passed->first - injected : -1, picked->first - injected);
}

// A new run in a directory that holds one stops before any step, naming --resume auto and
// --overwrite, and leaves the directory as it was; --overwrite starts anew.
TEST_F(LineageCli, NewRunInAUsedRunDirIsRefusedBeforeAnyStep) {
  fs::copy(dir("reference"), dir("used"), fs::copy_options::recursive);
  const auto before = fingerprint(dir("used"));
  auto job = train("used", {{"max_steps", "4"}}, {});
  ASSERT_TRUE(job->wait(kTimeout)) << job->out();
  EXPECT_FALSE(job->status().ok()) << job->out();
  const auto line = job->find_line("already holds a run");
  ASSERT_TRUE(line) << job->out();
  EXPECT_NE(line->second.find("--resume auto"), std::string::npos) << line->second;
  EXPECT_NE(line->second.find("--overwrite"), std::string::npos) << line->second;
  EXPECT_EQ(fingerprint(dir("used")), before);
  report("new run in a used run dir",
         "lockstep train --nproc 2 (no --resume) into a finished run's directory",
         str_cat("\"", line_with(line->second, "lockstep: error", 200),
                 "\", exit 1; directory unchanged"),
         line->first, job->elapsed());
  auto again = train("used", {{"max_steps", "4"}}, {"--overwrite"});
  ASSERT_TRUE(again->wait(kTimeout) && again->status().ok()) << again->out();
  EXPECT_EQ(read_step_log(dir("used") / "metrics.jsonl").steps, (std::vector<int64_t>{1, 2, 3, 4}));
}

// list, verify (exit 1 naming the damaged one), rollback (refused to a damaged one; then
// `--resume auto` continues from the named step; --prune deletes the abandoned branch).
TEST_F(LineageCli, CheckpointsListVerifyAndRollback) {
  const fs::path run = dir("cli"), ckpt = run / "checkpoints";
  auto first =
      train("cli", {{"max_steps", "12"}, {"checkpoint_every", "4"}, {"checkpoint_keep", "3"}}, {});
  ASSERT_TRUE(first->wait(kTimeout) && first->status().ok()) << first->out();
  flip_last_byte(ckpt / "step-000000012" / "model.safetensors");
  auto verify = cli({"checkpoints", "verify", run.string()});
  EXPECT_EQ(verify->status().code, 1) << verify->out();
  const auto bad = verify->find_line("step-000000012");
  ASSERT_TRUE(bad) << verify->out();
  EXPECT_NE(bad->second.find("BAD"), std::string::npos) << bad->second;
  EXPECT_NE(bad->second.find("CRC-32"), std::string::npos) << bad->second;
  EXPECT_NE(verify->out().find("1 of 3 checkpoint(s)"), std::string::npos) << verify->out();
  report("lockstep checkpoints verify", "one byte of step-12's model.safetensors changed",
         str_cat("\"", line_with(bad->second, "BAD", 160), "\", exit 1"), -1, verify->elapsed());

  auto refused = cli({"checkpoints", "rollback", run.string(), "--step", "12"});
  EXPECT_EQ(refused->status().code, 1) << refused->out();
  EXPECT_NE(refused->out().find("damaged"), std::string::npos) << refused->out();
  auto back = cli({"checkpoints", "rollback", run.string(), "--step", "4"});
  ASSERT_TRUE(back->status().ok()) << back->out();
  auto cont =
      train("cli", {{"max_steps", "6"}, {"checkpoint_every", "2"}, {"checkpoint_keep", "3"}},
            {"--resume", "auto"});
  ASSERT_TRUE(cont->wait(kTimeout) && cont->status().ok()) << cont->out();
  EXPECT_TRUE(cont->find_line("resuming " + (ckpt / "step-000000004").string())) << cont->out();
  EXPECT_EQ(read_step_log(run / "metrics.jsonl").steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));

  auto list = cli({"checkpoints", "list", run.string()});
  ASSERT_TRUE(list->status().ok()) << list->out();
  const auto l6 = list->find_line("step-000000006"), l8 = list->find_line("step-000000008");
  ASSERT_TRUE(l6 && l8) << list->out();
  EXPECT_NE(l6->second.find("current"), std::string::npos) << list->out();
  EXPECT_NE(l8->second.find("abandoned"), std::string::npos) << list->out();
  auto prune = cli({"checkpoints", "rollback", run.string(), "--step", "6", "--prune"});
  ASSERT_TRUE(prune->status().ok()) << prune->out();
  EXPECT_FALSE(fs::exists(ckpt / "step-000000008"));
  EXPECT_FALSE(fs::exists(ckpt / "step-000000012"));
  EXPECT_TRUE(fs::exists(ckpt / "step-000000006"));
}

}  // namespace
}  // namespace lockstep::reliability
