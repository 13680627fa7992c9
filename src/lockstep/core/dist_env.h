// The distributed environment of this process: rank, local rank, world size, local world size,
// master address and port. Read from torchrun-style variables (RANK, WORLD_SIZE, ...), from
// Open MPI (OMPI_COMM_WORLD_*) or from Slurm (SLURM_PROCID, SLURM_NTASKS, ...), in that order
// of precedence. Missing or inconsistent values raise ConfigError naming the variable.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace lockstep {

struct DistEnv {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  int local_world_size = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "default";  // "torchrun", "openmpi", "slurm" or "default" (single process)
};

using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

// Looks a variable up in the process environment.
std::optional<std::string> getenv_opt(std::string_view name);

DistEnv read_dist_env(const EnvLookup& lookup = getenv_opt);

// Parses an integer environment value; ConfigError names the variable when it is not one.
int parse_env_int(std::string_view name, std::string_view value, int min_value, int max_value);
// Reads an integer variable or returns def when unset.
int env_int(std::string_view name, int def, int min_value, int max_value,
            const EnvLookup& lookup = getenv_opt);

}  // namespace lockstep
