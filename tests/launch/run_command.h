// Test helper: runs a command line to completion with a hard timeout and captures its output.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "lockstep/core/clock.h"
#include "lockstep/launch/subprocess.h"

namespace lockstep::testing {

struct CommandResult {
  launch::ExitStatus status;
  std::string out, err;
  double seconds = 0;
  bool timed_out = false;
};

// Runs argv; after `timeout` the process group is killed and timed_out is set. The optional
// `during` callback runs once, `after_s` seconds in, with the child's pid (to send signals).
CommandResult run_command(const std::vector<std::string>& argv, Millis timeout,
                          const std::map<std::string, std::string>& env = {},
                          double after_s = -1, void (*during)(pid_t) = nullptr);

}  // namespace lockstep::testing
