// Helpers of the fault-injection suite: a background job with timestamped output (to measure
// time to detect and to recover), the worker processes under a launcher found by rank, a
// small synthetic Fashion-MNIST-shaped data set, file-tree fingerprints (to prove nothing
// saved was touched), and the one-line `[reliability]` record every case prints for
// docs/reliability.md.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "lockstep/core/clock.h"
#include "lockstep/launch/subprocess.h"

namespace lockstep::reliability {

namespace fs = std::filesystem;

// A fresh directory under /tmp, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// One command running in the background; a thread collects its stdout and stderr line by line
// with the time each line arrived. The destructor kills (SIGKILL) and reaps the command and
// every process below it, so a failed assertion never leaves workers behind.
class Job {
 public:
  Job(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {});
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  pid_t pid() const { return pid_; }
  // Seconds since the job started.
  double elapsed() const;
  // Waits for the exit; false (and the job killed) when `timeout` passes first.
  bool wait(Millis timeout);
  launch::ExitStatus status() const;
  bool running() const;
  std::string out() const;  // stdout and stderr so far, interleaved as they arrived
  // The first line (and its arrival, in seconds since the start) containing `needle`.
  std::optional<std::pair<double, std::string>> find_line(const std::string& needle) const;
  // Waits until such a line arrives or the job ends; nullopt after `timeout`.
  std::optional<std::pair<double, std::string>> wait_line(const std::string& needle,
                                                          Millis timeout) const;

 private:
  void pump();

  std::unique_ptr<launch::Subprocess> proc_;
  pid_t pid_ = -1;
  Clock::time_point t0_;
  mutable std::mutex mu_;
  std::vector<std::pair<double, std::string>> lines_;
  std::string out_;
  std::optional<launch::ExitStatus> status_;
  std::thread reader_;
};

// Every live process below `root` (children, grandchildren, ...).
std::vector<pid_t> descendants(pid_t root);
// The process below `root` whose environment has RANK=<rank> and whose program is `exe`
// (the basename), waiting up to `timeout` for it to appear.
std::optional<pid_t> find_worker(pid_t root, int rank, const std::string& exe, Millis timeout);

// Writes {train,t10k}-{images-idx3,labels-idx1}-ubyte with n_train / n_test 28x28 images whose
// pixels depend on the label (learnable) and on `seed`.
void write_synthetic_fmnist(const fs::path& dir, int n_train, int n_test, uint32_t seed);

// Path -> size and CRC-32 of every regular file below `dir` but a run directory's .lock
// (empty when it does not exist).
std::map<std::string, std::string> fingerprint(const fs::path& dir);

// The "step" numbers of the {"kind": "step"} records of a metrics.jsonl, in file order, and
// their losses (as dumped, so that equal strings mean bitwise equal doubles).
struct StepLog {
  std::vector<int64_t> steps;
  std::vector<std::string> losses;
};
StepLog read_step_log(const fs::path& metrics_jsonl);
// The largest step in a metrics.jsonl so far (0 when none).
int64_t last_logged_step(const fs::path& metrics_jsonl);

// The tensors of `file` (model.safetensors, ...) of the newest checkpoint under `ckpt_dir`, by
// name (empty when there is none).
std::map<std::string, std::vector<uint8_t>> checkpoint_tensors(const fs::path& ckpt_dir,
                                                               const char* file);

// The first line of `text` containing `needle`, trimmed to `max` characters ("" when none).
std::string line_with(const std::string& text, const std::string& needle, size_t max = 220);

// Prints the record docs/reliability.md is filled from:
//   [reliability] case=<name> | injected=<how> | result=<what happened> | detect_s=<s> |
//   recover_s=<s>
// A negative time prints as "-" (not applicable).
void report(const std::string& name, const std::string& injected, const std::string& result,
            double detect_s, double recover_s);

// The TOML text of a small fmnist-mlp run over `data_dir` into `run_dir`; `overrides` maps
// keys to TOML values (strings quoted) and replaces or adds keys.
std::string small_train_config(const fs::path& data_dir, const fs::path& run_dir,
                               const std::map<std::string, std::string>& overrides = {});
void write_text(const fs::path& path, const std::string& text);

}  // namespace lockstep::reliability
