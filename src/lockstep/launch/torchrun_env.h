// What torchrun sets for a worker beyond RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and
// GROUP_RANK, so that unmodified torchrun scripts run under `lockstep run`; and the Python
// that runs a `.py` program.
//
// A Python script keeps MASTER_ADDR/MASTER_PORT for its own c10d store
// (init_process_group("env://")): LaunchConfig::program_master_port names a second, free
// port for it, and lockstep's store moves to LOCKSTEP_STORE_PORT.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "lockstep/launch/launcher.h"

namespace lockstep::launch {

// Adds ROLE_RANK, ROLE_WORLD_SIZE, ROLE_NAME, GROUP_WORLD_SIZE, TORCHELASTIC_RESTART_COUNT
// (from LOCKSTEP_RESTART_COUNT), TORCHELASTIC_MAX_RESTARTS and TORCHELASTIC_RUN_ID to one
// worker's environment, and the program's MASTER_PORT when cfg.program_master_port > 0.
void add_torchrun_env(std::map<std::string, std::string>& env, const LaunchConfig& cfg, int rank,
                      int world);

// Whether `command` runs a Python script (its first word ends in ".py").
bool is_python_script(const std::vector<std::string>& command);

// The command with the interpreter in front: $LOCKSTEP_PYTHON, else /usr/bin/python3 (where
// Debian's python3-torch is) when it exists, else python3 from PATH.
std::vector<std::string> with_python(std::vector<std::string> command);

// A TCP port on `host` that nothing listens on now (bound to 0 and closed again).
int pick_free_port(const std::string& host);

}  // namespace lockstep::launch
