// kill -9 of a LibTorch worker (examples/libtorch_cnn, lockstep::torch DDP with lockstep
// checkpoints) under `lockstep run --nproc-per-node 2 --max-restarts 1`: the launcher restarts
// both workers, they resume from the newest checkpoint (model, optimizer, sampler position),
// and the job ends with parameters bitwise equal to a run that never failed. Built with LibTorch
// only (so never in the sanitizer build).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "lockstep/core/error.h"
#include "rel_util.h"

namespace lockstep::reliability {
namespace {

// 2048 samples / 2 ranks / batch 64 = 16 steps an epoch: 3 epochs, a checkpoint every 8.
constexpr int kSteps = 48, kEvery = 8;
const Millis kRunTimeout{std::chrono::seconds(120)};

std::unique_ptr<Job> start(const fs::path& root, const fs::path& dir) {
  return std::make_unique<Job>(std::vector<std::string>{LOCKSTEP_BIN,
                                                        "run",
                                                        "--nproc-per-node",
                                                        "2",
                                                        "--max-restarts",
                                                        "1",
                                                        "--",
                                                        LIBTORCH_CNN,
                                                        "--epochs",
                                                        "3",
                                                        "--steps",
                                                        std::to_string(kSteps),
                                                        "--threads",
                                                        "1",
                                                        "--data-dir",
                                                        (root / "data").string(),
                                                        "--checkpoint-dir",
                                                        dir.string(),
                                                        "--checkpoint-every",
                                                        std::to_string(kEvery)});
}

TEST(TorchRecovery, KillNineOfAWorkerResumesBitwise) {
  TempDir root;
  write_synthetic_fmnist(root.path / "data", 2048, 256, 3);
  auto ref = start(root.path, root.path / "reference");
  ASSERT_TRUE(ref->wait(kRunTimeout)) << "the reference run did not end in 120 s\n" << ref->out();
  ASSERT_TRUE(ref->status().ok()) << ref->out();
  const auto ref_model = checkpoint_tensors(root.path / "reference", "model.safetensors");
  const auto ref_optim = checkpoint_tensors(root.path / "reference", "optimizer.safetensors");
  ASSERT_FALSE(ref_model.empty());
  ASSERT_EQ(ref_optim.size(), 1u);  // torch::optim's archive, one uint8 tensor

  const fs::path dir = root.path / "killed";
  auto job = start(root.path, dir);
  const auto pid = find_worker(job->pid(), 1, "libtorch_cnn", std::chrono::seconds(30));
  ASSERT_TRUE(pid) << "worker rank 1 never appeared\n" << job->out();
  const auto until = Deadline::after(std::chrono::seconds(60));
  while (!fs::exists(dir / "step-000000016") && job->running() && !until.expired()) ::usleep(500);
  ASSERT_TRUE(fs::exists(dir / "step-000000016")) << job->out();
  ASSERT_EQ(::kill(*pid, SIGKILL), 0);
  const double killed_at = job->elapsed();

  ASSERT_TRUE(job->wait(kRunTimeout)) << "no end within 120 s: a hang\n" << job->out();
  const std::string out = job->out();
  EXPECT_TRUE(job->status().ok()) << job->status().describe() << "\n" << out;
  const auto detected = job->find_line("worker rank 1");
  ASSERT_TRUE(detected) << out;
  EXPECT_NE(detected->second.find("killed by signal 9 (SIGKILL)"), std::string::npos) << out;
  ASSERT_TRUE(job->find_line("restarting all workers (restart 1 of 1)")) << out;
  const auto resumed = job->find_line("libtorch_cnn: resumed from");
  ASSERT_TRUE(resumed) << out;
  const int64_t at = std::atoll(resumed->second.c_str() + resumed->second.rfind("at step ") + 8);
  EXPECT_GE(at, 16) << out;
  EXPECT_EQ(at % kEvery, 0) << out;
  EXPECT_TRUE(job->find_line(str_cat("2 workers, ", kSteps, " steps"))) << out;

  // The optimizer's archive keys its state by tensor addresses, so its bytes differ from run to
  // run; the final parameters show it was restored (SGD momentum 0.9 carries every earlier step).
  EXPECT_TRUE(checkpoint_tensors(dir, "model.safetensors") == ref_model) << "final weights differ";
  report("kill -9 LibTorch worker",
         "kill -9 of rank 1 after checkpoint 16 of 48 (lockstep run --nproc-per-node 2 "
         "--max-restarts 1 -- libtorch_cnn --checkpoint-every 8)",
         str_cat("launcher: \"", line_with(detected->second, "worker rank", 90),
                 "\"; restart 1 of 1, resumed at step ", at,
                 "; final parameters bitwise equal to the uninterrupted run"),
         detected->first - killed_at, resumed->first - killed_at);
}

}  // namespace
}  // namespace lockstep::reliability
