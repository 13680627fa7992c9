// `lockstep train --zero` end to end, as real processes over loopback (the lockstep program,
// which starts its workers through the launcher): a ZeRO run of 3 workers saves one shard per
// worker; it resumes with 2; a corrupt shard stops every worker with an error naming the file,
// the command exits non-zero, and the saved checkpoint keeps its bytes. Every command runs in
// a process group of its own, killed by id if it outlives its time limit (its workers then
// die by PR_SET_PDEATHSIG with the launcher).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include "lockstep/train/checkpoint.h"
#include "test_util.h"

namespace lockstep::train {
namespace {

namespace fs = std::filesystem;

struct Result {
  int code = -1;  // exit status; -1: killed at the time limit
  std::string out;
};

// Runs argv with RANK / WORLD_SIZE unset, stdout and stderr into one file.
Result run(const std::vector<std::string>& argv, const fs::path& log, std::chrono::seconds limit) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::unsetenv("RANK");
    ::unsetenv("WORLD_SIZE");
    std::FILE* f = std::freopen(log.c_str(), "w", stdout);
    if (!f || ::dup2(::fileno(stdout), 2) < 0) ::_exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  Result r;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  for (;;) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      // The command's process group. The workers are not in it (Subprocess gives each a group
      // of its own); they die by PR_SET_PDEATHSIG when the launcher does.
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(-pid, SIGKILL);  // whatever is left in the command's group (workers: PDEATHSIG)
  std::ifstream in(log);
  r.out.assign(std::istreambuf_iterator<char>(in), {});
  return r;
}

using testing::fingerprint;

TEST(ZeroCli, ShardsPerWorkerResumeWithFewerAndACorruptShardStopsEveryWorker) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed (scripts/install-deps installs it)";
  const auto dir = testing::fresh_dir("zero_cli");
  std::ofstream(dir / "zero.toml") << "model = \"fmnist-mlp\"\nepochs = 1\nbatch = 16\nlr = 0.05\nmomentum = 0.9\n"
                                      "train_limit = 480\ntest_limit = 64\ncheckpoint_every = 4\n"
                                      "checkpoint_keep = 0\nmax_steps = 8\nlog_every = 4\ntimeout = 20\n";
  const std::vector<std::string> base = {LOCKSTEP_BIN, "train", "--config", (dir / "zero.toml").string(), "--zero"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };

  // 3 workers: one shard each, in the manifest.
  const Result saved = run(with({"--nproc", "3", "--run-dir", (dir / "a").string()}), dir / "a.log",
                           std::chrono::seconds(90));
  ASSERT_EQ(saved.code, 0) << saved.out;
  const fs::path ckpt = dir / "a" / "checkpoints" / "step-000000008";
  const Checkpoint c = load_checkpoint(ckpt);
  ASSERT_EQ(c.manifest.state["zero"]["shards"].size(), 3u);
  for (int r = 0; r < 3; ++r) {
    const std::string name = "zero-shard-0000" + std::to_string(r) + "-of-00003.safetensors";
    EXPECT_TRUE(c.manifest.files.count(name)) << name;
  }

  // 2 workers (fewer) continue from it.
  const Result fewer = run(with({"--nproc", "2", "--run-dir", (dir / "b").string(), "--resume", ckpt.string(),
                                 "--max-steps", "12"}),
                           dir / "b.log", std::chrono::seconds(90));
  EXPECT_EQ(fewer.code, 0) << fewer.out;
  EXPECT_NE(fewer.out.find("resumed from"), std::string::npos) << fewer.out;
  EXPECT_NE(fewer.out.find("lockstep train: done model=fmnist-mlp world=2"), std::string::npos) << fewer.out;

  // A corrupt shard: every worker stops, the command fails, the checkpoint keeps its bytes.
  const std::string shard = "zero-shard-00001-of-00003.safetensors";
  testing::corrupt_byte(ckpt / shard, 5);
  const auto before = fingerprint(dir / "a");
  // (--max-steps 12: at the config's 8 the run would be complete, with no shard to read.)
  const Result bad = run(with({"--nproc", "2", "--run-dir", (dir / "c").string(), "--resume", ckpt.string(),
                               "--max-steps", "12"}),
                         dir / "c.log", std::chrono::seconds(90));
  EXPECT_NE(bad.code, 0) << bad.out;
  EXPECT_NE(bad.code, -1) << "killed at the time limit: a worker waited instead of stopping\n" << bad.out;
  EXPECT_NE(bad.out.find(shard + ": CRC-32"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("resume from an older checkpoint"), std::string::npos) << bad.out;
  EXPECT_EQ(fingerprint(dir / "a"), before) << "the saved run was changed";
  EXPECT_FALSE(fs::exists(dir / "c" / "checkpoints" / "step-000000008"));
}

}  // namespace
}  // namespace lockstep::train
