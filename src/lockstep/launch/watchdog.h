// Watchdog: a small process the launcher forks at its start, which outlives the launcher only
// to clean up after it. The launcher tells it each worker process group it starts and each
// it has reaped; if the launcher dies without saying goodbye (kill -9, a crash), the watchdog
// kills every group it knows (so a worker's own children die too: PR_SET_PDEATHSIG reaches
// only the worker itself) and deletes the files it was given (the launcher's temporary files).
//
//   Watchdog dog({"/run/.launch-123.toml"});
//   dog.watch(worker.pid());   ...   dog.forget(worker.pid());
//   // ~Watchdog: goodbye, the watchdog exits touching nothing
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace lockstep::launch {

class Watchdog {
 public:
  // Forks the watchdog. Best effort: when it cannot start, a warning, and the launcher runs
  // without one.
  explicit Watchdog(const std::vector<std::string>& remove_if_killed = {});
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void watch(pid_t process_group);
  void forget(pid_t process_group);
  pid_t pid() const { return pid_; }

 private:
  void send(int32_t msg);
  int fd_ = -1;  // write end of the pipe; the watchdog sees EOF when this process dies
  pid_t pid_ = -1;
};

}  // namespace lockstep::launch
