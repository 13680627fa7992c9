// Faults injected into running `lockstep train` jobs (label multiproc): a worker stopped with
// SIGSTOP, the rendezvous store killed, the checkpoint directory filling up or turning
// read-only, and the launcher killed with SIGKILL. Each must end in a clear error (or, where
// the fault cannot matter, a finished run) within a bounded time, never a hang, and must not
// touch any checkpoint saved before.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "lockstep/core/error.h"
#include "lockstep/core/proc_state.h"
#include "lockstep/store/tcp_store.h"
#include "lockstep/train/checkpoint.h"
#include "rel_util.h"

namespace lockstep::reliability {
namespace {

constexpr int kTrain = 3072;
using Overrides = std::map<std::string, std::string>;
const Millis kRunTimeout{std::chrono::seconds(60)};

struct Workspace {
  TempDir tmp;
  fs::path data = tmp.path / "data", run = tmp.path / "run", cfg = tmp.path / "train.toml";
  explicit Workspace(const std::map<std::string, std::string>& overrides = {}) {
    write_synthetic_fmnist(data, kTrain, 256, 5);
    fs::create_directories(run);
    write_text(cfg, small_train_config(data, run, overrides));
  }
  std::vector<std::string> train(std::vector<std::string> extra = {}) const {
    std::vector<std::string> a{LOCKSTEP_BIN, "train", "--config", cfg.string()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // Blocks until the run has logged step `step` (false after 60 s or when the job ended).
  bool reach_step(const Job& job, int64_t step) const {
    const auto dl = Deadline::after(std::chrono::seconds(60));
    while (last_logged_step(run / "metrics.jsonl") < step) {
      if (dl.expired() || !job.running()) return false;
      ::usleep(500);
    }
    return true;
  }
};

// ---- SIGSTOP: a stalled worker -------------------------------------------------------------

// rank 1 is stopped at step 25 of a job whose collectives time out after 3 s. Rank 0 must
// fail naming rank 1 after about that long; the launcher then stops the group (SIGTERM, then
// SIGCONT so that the stopped rank handles it), names the stopped rank and exits non-zero,
// or with `restarts` restarts all workers, which resume from the last checkpoint and finish.
void stop_a_worker(bool restart) {
  Workspace s(Overrides{{"timeout", "3"}, {"epochs", "4"}, {"checkpoint_every", "20"}});
  Job job(s.train({"--nproc", "2", "--max-restarts", restart ? "1" : "0"}));
  const auto victim = find_worker(job.pid(), 1, "lockstep", std::chrono::seconds(30));
  ASSERT_TRUE(victim) << job.out();
  ASSERT_TRUE(s.reach_step(job, 25)) << job.out();
  ASSERT_EQ(::kill(*victim, SIGSTOP), 0);
  const double stopped_at = job.elapsed();
  ASSERT_TRUE(job.wait(kRunTimeout)) << "a hang: no exit 60 s after SIGSTOP\n" << job.out();
  const std::string out = job.out();
  // Rank 0's error names the operation, the stalled rank and the timeout.
  const auto named = job.find_line("[rank 0] lockstep: error:");
  ASSERT_TRUE(named) << out;
  EXPECT_NE(named->second.find("waiting for rank 1"), std::string::npos) << out;
  EXPECT_NE(named->second.find("allreduce #"), std::string::npos) << out;
  EXPECT_NE(out.find("no report from rank(s) 1"), std::string::npos) << out;  // the flight recorder
  // No error claims a wait it did not make (DDP's said "within 300000 ms", its own default,
  // around the process group's error at 3 s).
  EXPECT_EQ(out.find("300000 ms"), std::string::npos) << out;
  const auto failed = job.find_line("lockstep run: worker rank");
  ASSERT_TRUE(failed) << out;
  // The launcher names the stopped worker too (its peers' timeouts are the symptom).
  EXPECT_NE(failed->second.find("while worker rank 1"), std::string::npos) << out;
  const double detect = named->first - stopped_at, end = job.elapsed() - stopped_at;
  // Rank 0 may have been waiting before the stop (if rank 1 lagged behind it), so its 3 s can
  // end a little sooner after the stop; a rank that ignored the timeout would hang for 60 s.
  EXPECT_GE(detect, 1.5) << "rank 0 gave up long before its 3 s timeout\n" << out;
  EXPECT_LT(detect, 20.0) << out;
  if (!restart) {
    EXPECT_FALSE(job.status().ok()) << out;
    // SIGCONT follows SIGTERM: no --grace (5 s) wait for the stopped worker.
    EXPECT_LT(end, 3.0 + 5.0 + 4.0) << "the launcher took too long to stop the group\n" << out;
    report("SIGSTOP worker",
           "kill -STOP rank 1 at step >= 25 (lockstep train --nproc 2, timeout = 3)",
           str_cat("rank 0: \"", named->second.substr(named->second.find("allreduce #"), 220),
                   "\"; launcher: \"", line_with(failed->second, "worker rank", 110), "\", exit ",
                   job.status().shell_code()),
           detect, end);
    return;
  }
  EXPECT_TRUE(job.status().ok()) << out;
  const auto resumed = job.find_line("resumed from");
  ASSERT_TRUE(resumed) << out;
  const StepLog log = read_step_log(s.run / "metrics.jsonl");
  std::vector<int64_t> want(log.steps.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = int64_t(i + 1);
  EXPECT_EQ(log.steps, want);
  EXPECT_EQ(log.steps.size(), size_t(4 * kTrain / 2 / 16));
  report("SIGSTOP worker, --max-restarts 1",
         "kill -STOP rank 1 at step >= 25 (lockstep train --nproc 2, timeout = 3)",
         str_cat("rank 0 times out naming rank 1; the launcher stops the group (SIGTERM + "
                 "SIGCONT, so the stopped rank ends at once), restarts, \"",
                 line_with(resumed->second, "resumed", 90), "\"; every step logged once, exit 0"),
         detect, resumed->first - stopped_at);
}

TEST(Faults, StoppedWorkerTimesOutNamingItAndTheLauncherExitsNonZero) {
  stop_a_worker(false);
}
TEST(Faults, StoppedWorkerWithARestartLeftRecovers) {
  stop_a_worker(true);
}

// ---- The rendezvous store killed -----------------------------------------------------------

// A store in a process of its own (rel_helper serve-store), so that it can be killed -9.
struct StoreProcess {
  TempDir tmp;
  std::string token = "reliability-token";
  std::unique_ptr<Job> job;
  int port = 0;
  StoreProcess() {
    job = std::make_unique<Job>(
        std::vector<std::string>{REL_HELPER, "serve-store", token, (tmp.path / "port").string()});
    const auto dl = Deadline::after(std::chrono::seconds(20));
    while (!(std::ifstream(tmp.path / "port") >> port) && !dl.expired()) ::usleep(2000);
  }
  std::map<std::string, std::string> env(int rank, int world) const {
    return {{"RANK", std::to_string(rank)},
            {"LOCAL_RANK", std::to_string(rank)},
            {"WORLD_SIZE", std::to_string(world)},
            {"LOCAL_WORLD_SIZE", std::to_string(world)},
            {"MASTER_ADDR", "127.0.0.1"},
            {"MASTER_PORT", std::to_string(port)},
            {"LOCKSTEP_STORE_TOKEN", token},
            {"LOCKSTEP_LAUNCHER", "1"}};  // the store is hosted here
  }
  // Waits until `key` is in the store (a rank has reached that point).
  bool wait_key(const std::string& key) const {
    store::TcpStore client({.host = "127.0.0.1",
                            .port = uint16_t(port),
                            .token = token,
                            .connect_timeout = std::chrono::seconds(10),
                            .timeout = std::chrono::seconds(15)});
    try {
      client.wait({key}, std::chrono::seconds(15));
      return true;
    } catch (const Error&) {
      return false;
    }
  }
};

TEST(Faults, StoreKilledDuringRendezvousIsAClearErrorNotAHang) {
  Workspace s(Overrides{{"timeout", "20"}});
  StoreProcess store;
  ASSERT_GT(store.port, 0) << store.job->out();
  // Rank 0 of 2 alone: it posts its pre-flight record and waits for rank 1's.
  Job rank0(s.train(), store.env(0, 2));
  ASSERT_TRUE(store.wait_key("preflight/0")) << rank0.out();
  ASSERT_EQ(::kill(store.job->pid(), SIGKILL), 0);
  const double killed_at = rank0.elapsed();
  ASSERT_TRUE(rank0.wait(kRunTimeout)) << "a hang\n" << rank0.out();
  const double end = rank0.elapsed() - killed_at;
  const std::string out = rank0.out();
  EXPECT_FALSE(rank0.status().ok()) << out;
  EXPECT_LT(end, 10.0)
      << "rank 0 should notice the closed connection, not wait out its 20 s timeout\n"
      << out;
  const std::string msg = line_with(out, "error", 260);
  EXPECT_NE(msg.find(str_cat("127.0.0.1:", store.port)), std::string::npos) << out;
  report("store killed during rendezvous",
         "kill -9 of the store process while rank 0 waits in pre-flight for rank 1 (timeout = 20)",
         str_cat("rank 0: \"", msg, "\", exit ", rank0.status().shell_code()), end, -1);
}

TEST(Faults, StoreKilledAfterRendezvousDoesNotDisturbTraining) {
  Workspace s(Overrides{{"timeout", "20"}});
  StoreProcess store;
  ASSERT_GT(store.port, 0) << store.job->out();
  Job rank0(s.train(), store.env(0, 2));
  Job rank1(s.train(), store.env(1, 2));
  ASSERT_TRUE(s.reach_step(rank0, 5)) << rank0.out() << rank1.out();
  ASSERT_EQ(::kill(store.job->pid(), SIGKILL), 0);
  ASSERT_TRUE(rank0.wait(kRunTimeout) && rank1.wait(kRunTimeout)) << rank0.out() << rank1.out();
  EXPECT_TRUE(rank0.status().ok()) << rank0.out();
  EXPECT_TRUE(rank1.status().ok()) << rank1.out();
  const StepLog log = read_step_log(s.run / "metrics.jsonl");
  ASSERT_FALSE(log.steps.empty());
  EXPECT_EQ(log.steps.back(), int64_t(log.steps.size()));
  report("store killed after rendezvous",
         "kill -9 of the store process at step >= 5 of 192 (2 ranks)",
         str_cat("training goes on (the store is used only to meet): both ranks exit 0, ",
                 log.steps.size(), " steps logged; \"",
                 line_with(rank0.out(), "lockstep train: done", 60), "\""),
         -1, -1);
}

// ---- Disk full / read-only checkpoint directory --------------------------------------------

// A tmpfs mounted at `dir` for the test's lifetime; skipped where mounting is not allowed.
struct TmpfsMount {
  fs::path dir;
  bool mounted = false;
  std::string error;
  TmpfsMount(fs::path d, const char* options) : dir(std::move(d)) {
    fs::create_directories(dir);
    mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, options) == 0;
    if (!mounted)
      error = str_cat("mount -t tmpfs -o ", options, " tmpfs ", dir.string(), ": ",
                      std::strerror(errno));
  }
  ~TmpfsMount() {
    if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
  }
  // Remounts read-only; retries while a write is open (EBUSY).
  bool make_read_only() const {
    const auto dl = Deadline::after(std::chrono::seconds(10));
    while (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
      if (errno != EBUSY || dl.expired()) return false;
      ::usleep(200);
    }
    return true;
  }
  // Fills the file system with one file until ENOSPC.
  void fill() const {
    std::ofstream f(dir / "filler", std::ios::binary);
    const std::string block(1 << 16, 'x');
    while (f.write(block.data(), block.size())) {
    }
  }
};

// Trains with a checkpoint every 20 steps into a tmpfs; once the first checkpoint is complete,
// `inject` breaks the directory. Every rank must fail with the same clear error, the job must
// exit non-zero, and every checkpoint complete at that moment must be left as it was.
void checkpoint_dir_breaks(const std::string& name, const std::string& how, bool read_only) {
  // Far more steps than the fault needs (it stops the job at the next checkpoint): with 4
  // epochs (384 steps, under a second) a test thread delayed by a loaded machine could break
  // the directory only after the job's last checkpoint, and the job then rightly succeeded.
  Workspace s(Overrides{{"checkpoint_every", "20"}, {"checkpoint_keep", "0"}, {"epochs", "40"}});
  TmpfsMount mnt(s.run / "checkpoints", "size=64m");
  if (!mnt.mounted) GTEST_SKIP() << "cannot mount a tmpfs (needs root): " << mnt.error;
  Job job(s.train({"--nproc", "2"}));
  const fs::path first = mnt.dir / train::checkpoint_dir_name(20);
  const auto dl = Deadline::after(std::chrono::seconds(60));
  while (!fs::exists(first / "state.json") && job.running() && !dl.expired()) ::usleep(500);
  ASSERT_TRUE(fs::exists(first / "state.json")) << job.out();
  if (read_only)
    ASSERT_TRUE(mnt.make_read_only()) << std::strerror(errno);
  else
    mnt.fill();
  const double injected_at = job.elapsed();
  const int64_t at = last_logged_step(s.run / "metrics.jsonl");
  std::map<std::string, std::map<std::string, std::string>> saved;
  for (const auto& c : train::list_checkpoints(mnt.dir)) saved[c.filename()] = fingerprint(c);
  ASSERT_TRUE(job.wait(kRunTimeout)) << "a hang\n" << job.out();
  const std::string out = job.out();
  EXPECT_FALSE(job.status().ok()) << out;
  const auto r0 = job.find_line("[rank 0] lockstep: error: checkpoint failed");
  const auto r1 = job.find_line("[rank 1] lockstep: error: checkpoint failed");
  ASSERT_TRUE(r0) << out;
  ASSERT_TRUE(r1) << "every rank must stop with the same error\n" << out;
  const char* reason = read_only ? "Read-only file system" : "No space left on device";
  EXPECT_NE(r0->second.find(reason), std::string::npos) << out;
  EXPECT_NE(r1->second.find(reason), std::string::npos) << "rank 0's reason reaches rank 1\n" << out;
  for (const auto& [dir, files] : saved)
    EXPECT_EQ(fingerprint(mnt.dir / dir), files) << dir << " changed";
  report(
      name, str_cat(how, " at step ", at, " (lockstep train --nproc 2, checkpoint every 20)"),
      str_cat("\"", line_with(r0->second, "checkpoint failed", 230), "\" (same on rank 1), exit ",
              job.status().shell_code(), "; ", saved.size(), " earlier checkpoint(s) unchanged"),
      r0->first - injected_at, job.elapsed() - injected_at);
}

TEST(Faults, DiskFullWhileCheckpointingStopsEveryRankAndKeepsEarlierCheckpoints) {
  checkpoint_dir_breaks("disk full while checkpointing",
                        "tmpfs under checkpoints/ filled to ENOSPC", false);
}

TEST(Faults, ReadOnlyCheckpointDirStopsEveryRankAndKeepsEarlierCheckpoints) {
  checkpoint_dir_breaks("read-only checkpoint dir", "tmpfs under checkpoints/ remounted read-only",
                        true);
}

// ---- kill -9 of the launcher ----------------------------------------------------------------

// True once `pid` has exited (a zombie counts: after a kill -9 its parent may be one that does
// not reap); false after `within`.
bool exits_within(pid_t pid, Millis within) {
  const auto dl = Deadline::after(within);
  for (char st = proc_state(pid); st != 0 && st != 'Z' && st != 'X'; st = proc_state(pid)) {
    if (dl.expired()) return false;
    ::usleep(10000);
  }
  return true;
}

// The pid a worker's shell wrote to `file` (waits up to 30 s for the line).
std::optional<pid_t> pid_in(const fs::path& file) {
  const auto dl = Deadline::after(std::chrono::seconds(30));
  for (;; ::usleep(10000)) {
    std::ifstream in(file);
    std::string line;
    if (std::getline(in, line) && !in.eof()) return pid_t(std::stoi(line));
    if (dl.expired()) return std::nullopt;
  }
}

// Issue 18: each worker of `lockstep run` starts a child of its own; kill -9 of the launcher.
// The workers died (PR_SET_PDEATHSIG), their children were re-parented to PID 1 and lived on.
// 20 s: the watchdog needs milliseconds; a leftover child would sleep for 300 s.
TEST(Faults, LauncherKilledTakesTheWorkersOwnChildrenWithIt) {
  TempDir tmp;
  Job job(
      {LOCKSTEP_BIN, "run", "--nproc-per-node", "2", "--", "sh", "-c",
       str_cat("sleep 300 & echo $! > ", tmp.path.string(), "/child-$RANK.tmp && mv ",
               tmp.path.string(), "/child-$RANK.tmp ", tmp.path.string(), "/child-$RANK; wait")});
  std::vector<pid_t> kids;
  for (int r = 0; r < 2; ++r) {
    const auto kid = pid_in(tmp.path / str_cat("child-", r));
    ASSERT_TRUE(kid) << job.out();
    kids.push_back(*kid);
  }
  ASSERT_EQ(::kill(job.pid(), SIGKILL), 0);
  ASSERT_TRUE(job.wait(kRunTimeout));
  for (pid_t kid : kids) {
    const bool exited = exits_within(kid, std::chrono::seconds(20));
    EXPECT_TRUE(exited) << "worker's child " << kid << " outlived the launcher";
    if (!exited) ::kill(kid, SIGKILL);  // by pid: only what this test started
  }
}

// kill -9 of a `lockstep train --nproc 2` launcher: its hidden .launch-<pid>.toml (the
// workers' merged config) stayed in the run directory.
TEST(Faults, LauncherKilledLeavesNoHiddenConfigInTheRunDir) {
  Workspace s(Overrides{{"epochs", "4"}});
  Job job(s.train({"--nproc", "2"}));
  const auto worker = find_worker(job.pid(), 0, "lockstep", std::chrono::seconds(30));
  ASSERT_TRUE(worker) << job.out();
  const fs::path hidden = s.run / str_cat(".launch-", job.pid(), ".toml");
  ASSERT_TRUE(fs::exists(hidden)) << job.out();
  ASSERT_EQ(::kill(job.pid(), SIGKILL), 0);
  ASSERT_TRUE(job.wait(kRunTimeout));
  const bool exited = exits_within(*worker, std::chrono::seconds(20));
  EXPECT_TRUE(exited) << "worker " << *worker << " outlived the launcher";
  if (!exited) ::kill(*worker, SIGKILL);
  const auto dl = Deadline::after(std::chrono::seconds(20));
  while (fs::exists(hidden) && !dl.expired()) ::usleep(10000);
  EXPECT_FALSE(fs::exists(hidden)) << hidden << " outlived the launcher";
}

}  // namespace
}  // namespace lockstep::reliability
