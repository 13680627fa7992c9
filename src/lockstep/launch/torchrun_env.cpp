#include "lockstep/launch/torchrun_env.h"

#include <unistd.h>

#include <cstdlib>

#include "lockstep/core/error.h"
#include "lockstep/store/net.h"

namespace lockstep::launch {

void add_torchrun_env(std::map<std::string, std::string>& env, const LaunchConfig& cfg, int rank,
                      int world) {
  env["ROLE_RANK"] = std::to_string(rank);
  env["ROLE_WORLD_SIZE"] = std::to_string(world);
  env["ROLE_NAME"] = "default";
  env["GROUP_WORLD_SIZE"] = std::to_string(cfg.nnodes);
  auto restart = env.find("LOCKSTEP_RESTART_COUNT");
  env["TORCHELASTIC_RESTART_COUNT"] = restart != env.end() ? restart->second : "0";
  env["TORCHELASTIC_MAX_RESTARTS"] = std::to_string(cfg.max_restarts);
  env["TORCHELASTIC_RUN_ID"] = cfg.run_id.empty() ? "lockstep" : cfg.run_id;
  if (cfg.program_master_port > 0) {
    env["LOCKSTEP_STORE_PORT"] = env["MASTER_PORT"];
    env["MASTER_PORT"] = std::to_string(cfg.program_master_port);
  }
}

bool is_python_script(const std::vector<std::string>& command) {
  return !command.empty() && command[0].size() > 3 &&
         command[0].compare(command[0].size() - 3, 3, ".py") == 0;
}

std::vector<std::string> with_python(std::vector<std::string> command) {
  std::string python = "python3";
  if (const char* p = std::getenv("LOCKSTEP_PYTHON"); p && *p) {
    python = p;
  } else if (::access("/usr/bin/python3", X_OK) == 0) {
    python = "/usr/bin/python3";
  }
  command.insert(command.begin(), python);
  return command;
}

int pick_free_port(const std::string& host) {
  store::net::Fd fd = store::net::listen_tcp(host, 0, 1);
  return store::net::bound_port(fd.get());
}

}  // namespace lockstep::launch
