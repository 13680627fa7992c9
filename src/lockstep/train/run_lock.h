// One job per run directory. RunDirLock holds flock(2) on RUN_DIR/.lock while it lives and
// writes "pid=<pid> host=<host> since=<UTC time> job=<what>" into it, so that a second job in
// the same directory fails at once naming the holder, instead of both mixing their
// metrics.jsonl lines and deleting each other's checkpoint temporaries. The kernel drops the
// lock when its holder exits or is killed, so a dead job's lock never blocks a new one (its
// text is left behind and overwritten); on release the text is cleared.
//
//   RunDirLock lock(cfg.run_dir, "lockstep train --nproc 2");   // ConfigError when taken
//
// `lockstep train` takes it in the process that owns the job: the launcher with --nproc N
// (for the job's life, restarts included; its workers see kRunDirLockEnv and do not lock
// again), a single process itself, and rank 0 under another launcher (lockstep run,
// torchrun, mpirun). On a network file system flock needs the server's lock support.
#pragma once

#include <filesystem>
#include <string>

namespace lockstep::train {

// Set by a launcher that holds the lock for its workers: the run directory's absolute path.
inline constexpr const char* kRunDirLockEnv = "LOCKSTEP_RUN_DIR_LOCKED";

class RunDirLock {
 public:
  // Creates run_dir if needed and takes its lock without waiting. ConfigError naming the
  // holder (pid, host, since when, which job) and what to do when another process holds it;
  // SystemError / filesystem_error when the directory or the file cannot be made.
  RunDirLock(const std::filesystem::path& run_dir, const std::string& job);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// True when this process must take the run directory's lock itself: it is rank `rank` == 0
// and no launcher announced (kRunDirLockEnv) that it holds the lock of this directory.
bool run_dir_lock_needed(const std::filesystem::path& run_dir, int rank);

}  // namespace lockstep::train
