// kill -9 of a random worker at a random step of `lockstep train --nproc 2 --max-restarts 2`
// (label multiproc): the launcher notices, restarts both workers, they resume from the latest
// checkpoint, and the run ends with weights bitwise equal to those of a run that never
// failed, with every step logged exactly once and with the same loss.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <random>

#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/safetensors.h"
#include "rel_util.h"

namespace lockstep::reliability {
namespace {

constexpr int kTrain = 3072, kBatch = 16, kWorld = 2, kEvery = 20;
constexpr int64_t kSteps = 2 * (kTrain / kWorld / kBatch);  // 2 epochs
const Millis kRunTimeout{std::chrono::seconds(90)};

struct TrainRun {
  fs::path dir;
  std::unique_ptr<Job> job;
};

TrainRun start_run(const fs::path& root, const std::string& name) {
  TrainRun r{root / name, nullptr};
  fs::create_directories(r.dir);
  write_text(
      r.dir / "train.toml",
      small_train_config(root / "data", r.dir, {{"checkpoint_every", std::to_string(kEvery)}}));
  r.job = std::make_unique<Job>(
      std::vector<std::string>{LOCKSTEP_BIN, "train", "--config", (r.dir / "train.toml").string(),
                               "--nproc", std::to_string(kWorld), "--max-restarts", "2"});
  return r;
}

// The tensors of the final checkpoint's `file`, by name.
std::map<std::string, std::vector<uint8_t>> final_tensors(const fs::path& run_dir,
                                                          const char* file) {
  return checkpoint_tensors(run_dir / "checkpoints", file);
}

class Recovery : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new TempDir();
    write_synthetic_fmnist(root_->path / "data", kTrain, 256, 11);
    TrainRun ref = start_run(root_->path, "reference");
    ASSERT_TRUE(ref.job->wait(kRunTimeout)) << "the reference run did not finish in 90 s\n"
                                            << ref.job->out();
    ASSERT_TRUE(ref.job->status().ok()) << ref.job->out();
    reference_ = new fs::path(ref.dir);
  }
  static void TearDownTestSuite() {
    delete reference_;
    delete root_;
  }
  static TempDir* root_;
  static fs::path* reference_;
};
TempDir* Recovery::root_ = nullptr;
fs::path* Recovery::reference_ = nullptr;

TEST_F(Recovery, KillNineOfARandomWorkerAtARandomStepResumesBitwise) {
  ASSERT_NE(reference_, nullptr);
  const StepLog ref_log = read_step_log(*reference_ / "metrics.jsonl");
  ASSERT_EQ(ref_log.steps.size(), size_t(kSteps));
  const auto ref_model = final_tensors(*reference_, "model.safetensors");
  const auto ref_optim = final_tensors(*reference_, "optimizer.safetensors");
  ASSERT_FALSE(ref_model.empty());

  for (uint32_t seed : {1u, 2u, 3u, 4u, 5u}) {
    std::mt19937 rng(seed);
    const int victim = int(rng() % kWorld);
    const int64_t target = 3 + int64_t(rng() % uint32_t(kSteps * 6 / 10));
    SCOPED_TRACE(str_cat("seed ", seed, ": kill -9 rank ", victim, " at step >= ", target));
    TrainRun run = start_run(root_->path, str_cat("kill-", seed));
    const auto pid = find_worker(run.job->pid(), victim, "lockstep", std::chrono::seconds(30));
    ASSERT_TRUE(pid) << "worker rank " << victim << " never appeared\n" << run.job->out();
    // Poll the metrics log (one record per step) until the target step, then kill.
    const auto until = Deadline::after(std::chrono::seconds(60));
    int64_t at = 0;
    while ((at = last_logged_step(run.dir / "metrics.jsonl")) < target && !until.expired())
      ::usleep(500);
    ASSERT_LT(at, kSteps) << "training ended before the kill\n" << run.job->out();
    ASSERT_EQ(::kill(*pid, SIGKILL), 0);
    const double killed_at = run.job->elapsed();

    ASSERT_TRUE(run.job->wait(kRunTimeout)) << "no end within 90 s: a hang\n" << run.job->out();
    const std::string out = run.job->out();
    EXPECT_TRUE(run.job->status().ok()) << run.job->status().describe() << "\n" << out;
    const auto detected = run.job->find_line(str_cat("worker rank ", victim));
    ASSERT_TRUE(detected) << out;
    EXPECT_NE(detected->second.find("killed by signal 9 (SIGKILL)"), std::string::npos) << out;
    ASSERT_TRUE(run.job->find_line("restarting all workers (restart 1 of 2)")) << out;
    EXPECT_FALSE(run.job->find_line("restart 2 of 2")) << out;
    // The restart resumes from the latest complete checkpoint: the one of the last multiple
    // of kEvery may still have been in the background writer (submit() waits for the one
    // before), so at most kEvery steps more than since that multiple are redone.
    const auto resumed = run.job->find_line("resumed from");
    int64_t resumed_step = 0;
    if (resumed)
      resumed_step = std::atoll(resumed->second.c_str() + resumed->second.rfind("at step ") + 8);
    EXPECT_EQ(resumed_step % kEvery, 0);
    EXPECT_GE(resumed_step, at / kEvery * kEvery - kEvery) << out;
    EXPECT_LE(resumed_step, at + 5) << out;  // the kill lands a little after the poll saw `at`
    if (at >= 2 * kEvery) EXPECT_TRUE(resumed) << out;

    // No lost or repeated step, each with the loss of the run that never failed.
    const StepLog log = read_step_log(run.dir / "metrics.jsonl");
    EXPECT_EQ(log.steps, ref_log.steps);
    EXPECT_EQ(log.losses, ref_log.losses);
    // The final weights (and optimizer state) bitwise equal.
    EXPECT_TRUE(final_tensors(run.dir, "model.safetensors") == ref_model) << "final weights differ";
    EXPECT_TRUE(final_tensors(run.dir, "optimizer.safetensors") == ref_optim)
        << "optimizer state differs";

    const double recovered_at =
        resumed ? resumed->first : run.job->find_line("restarting all workers")->first;
    report(
        str_cat("kill -9 worker (seed ", seed, ")"),
        str_cat("kill -9 of rank ", victim, " at step ", at, " of ", kSteps,
                " (lockstep train --nproc 2 "
                "--max-restarts 2, checkpoint every ",
                kEvery, ")"),
        str_cat(
            "launcher: \"", line_with(detected->second, "worker rank", 90), "\"; restart 1 of 2, ",
            resumed ? str_cat("resumed at step ", resumed_step)
                    : std::string("restarted from step 0 (checkpoint 20 was still being written)"),
            "; steps 1..", kSteps,
            " logged once each, final model and optimizer bitwise equal to the "
            "uninterrupted run"),
        detected->first - killed_at, recovered_at - killed_at);
  }
}

}  // namespace
}  // namespace lockstep::reliability
