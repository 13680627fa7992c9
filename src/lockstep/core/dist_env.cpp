#include "lockstep/core/dist_env.h"

#include <charconv>
#include <cstdlib>
#include <string>

#include "lockstep/core/error.h"

namespace lockstep {

std::optional<std::string> getenv_opt(std::string_view name) {
  const char* v = std::getenv(std::string(name).c_str());
  if (!v) return std::nullopt;
  return std::string(v);
}

int parse_env_int(std::string_view name, std::string_view value, int min_value, int max_value) {
  int out = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || ptr != value.data() + value.size()) {
    LOCKSTEP_THROW(ConfigError, "environment variable ", name, "='", value,
                   "' is not an integer");
  }
  if (out < min_value || out > max_value) {
    LOCKSTEP_THROW(ConfigError, "environment variable ", name, "=", out, " is out of range [",
                   min_value, ", ", max_value, "]");
  }
  return out;
}

int env_int(std::string_view name, int def, int min_value, int max_value,
            const EnvLookup& lookup) {
  auto v = lookup(name);
  if (!v || v->empty()) return def;
  return parse_env_int(name, *v, min_value, max_value);
}

namespace {

constexpr int kMaxWorld = 1 << 20;

// Names of the variables of one launcher's convention.
struct Convention {
  const char* source;
  const char* rank;
  const char* world;
  const char* local_rank;
  const char* local_world;
  const char* node_rank;  // may be null
};

constexpr Convention kTorchrun{"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                               "LOCAL_WORLD_SIZE", "GROUP_RANK"};
constexpr Convention kOpenMpi{"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                              "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
                              "OMPI_COMM_WORLD_NODE_RANK"};
constexpr Convention kSlurm{"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                            "SLURM_NTASKS_PER_NODE", "SLURM_NODEID"};

bool present(const EnvLookup& lookup, const char* name) {
  auto v = lookup(name);
  return v && !v->empty();
}

int required(const EnvLookup& lookup, const Convention& c, const char* name, int lo, int hi) {
  auto v = lookup(name);
  if (!v || v->empty()) {
    LOCKSTEP_THROW(ConfigError, c.source, " environment is incomplete: ", c.rank,
                   " is set but ", name, " is missing (set ", name,
                   " or launch with `lockstep run`)");
  }
  return parse_env_int(name, *v, lo, hi);
}

}  // namespace

DistEnv read_dist_env(const EnvLookup& lookup) {
  DistEnv env;
  const Convention* conv = nullptr;
  for (const Convention* c : {&kTorchrun, &kOpenMpi, &kSlurm}) {
    if (present(lookup, c->rank)) {
      conv = c;
      break;
    }
  }
  if (conv) {
    env.source = conv->source;
    env.world_size = required(lookup, *conv, conv->world, 1, kMaxWorld);
    env.rank = required(lookup, *conv, conv->rank, 0, kMaxWorld);
    if (env.rank >= env.world_size) {
      LOCKSTEP_THROW(ConfigError, "inconsistent environment: ", conv->rank, "=", env.rank,
                     " must be less than ", conv->world, "=", env.world_size);
    }
    env.local_rank = env_int(conv->local_rank, 0, 0, kMaxWorld, lookup);
    if (conv == &kSlurm) {
      // SLURM_NTASKS_PER_NODE may read "4" or "4(x2)"; take the leading number.
      auto v = lookup(conv->local_world);
      env.local_world_size = 1;
      if (v && !v->empty()) {
        std::string s = v->substr(0, v->find_first_not_of("0123456789"));
        env.local_world_size = s.empty() ? 1 : parse_env_int(conv->local_world, s, 1, kMaxWorld);
      }
    } else {
      env.local_world_size = env_int(conv->local_world, 1, 1, kMaxWorld, lookup);
    }
    if (env.local_rank >= env.local_world_size) {
      LOCKSTEP_THROW(ConfigError, "inconsistent environment: ", conv->local_rank, "=",
                     env.local_rank, " must be less than ", conv->local_world, "=",
                     env.local_world_size);
    }
    if (env.local_world_size > env.world_size) {
      LOCKSTEP_THROW(ConfigError, "inconsistent environment: ", conv->local_world, "=",
                     env.local_world_size, " exceeds ", conv->world, "=", env.world_size);
    }
    if (conv->node_rank) env.node_rank = env_int(conv->node_rank, 0, 0, kMaxWorld, lookup);
  } else if (present(lookup, "WORLD_SIZE")) {
    LOCKSTEP_THROW(ConfigError,
                   "WORLD_SIZE is set but RANK is missing: set RANK (0..WORLD_SIZE-1) for "
                   "every worker, or launch with `lockstep run`");
  }
  if (auto a = lookup("MASTER_ADDR"); a && !a->empty()) env.master_addr = *a;
  env.master_port = env_int("MASTER_PORT", env.master_port, 1, 65535, lookup);
  return env;
}

}  // namespace lockstep
