// Subprocess: one child process with its stdout and stderr on pipes, started with fork+exec.
// RAII: the destructor kills (SIGKILL) and reaps a child that is still running, so a launcher
// that throws never leaves workers behind. The child also gets SIGKILL if the parent dies
// (PR_SET_PDEATHSIG), and runs in its own process group so that signals reach its children.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::launch {

struct ExitStatus {
  bool signaled = false;
  int code = 0;  // exit code, or the signal number when signaled
  bool ok() const { return !signaled && code == 0; }
  // "exited with code 3" / "killed by signal 9 (SIGKILL)".
  std::string describe() const;
  // Shell-style code: the exit code, or 128 + signal.
  int shell_code() const { return signaled ? 128 + code : code; }
};

// Where exec would find program `name` (searched in `path`, a PATH value, unless it has a
// '/'), checked as exec will: ConfigError "program 'x' cannot be run: No such file or
// directory" (or Permission denied, Is a directory), so that a launcher can say it once
// before starting any worker.
std::string find_program(const std::string& name, const std::string& path);

class Subprocess {
 public:
  // Starts argv[0] (searched in PATH) with the current environment plus `env` overrides,
  // bound to `cpus` when not empty (sched_setaffinity in the child, before exec).
  Subprocess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
             const std::vector<int>& cpus = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return out_fd_; }
  int stderr_fd() const { return err_fd_; }
  void close_stdout();
  void close_stderr();

  // Sends a signal to the child's whole process group.
  void signal(int sig);
  // Non-blocking reap; returns the status once the child has exited.
  std::optional<ExitStatus> poll();
  const std::optional<ExitStatus>& status() const { return status_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::optional<ExitStatus> status_;
};

}  // namespace lockstep::launch
