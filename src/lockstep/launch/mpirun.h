// `lockstep run --via mpirun`: the launcher hands process start to Open MPI's mpirun, so that
// the workers are real MPI ranks (the mpi backend needs that; under plain `lockstep run` each
// would be an MPI singleton). The launcher still hosts the store, forwards the job's
// environment (-x, values never on the command line), relays output as "[rank N] ...",
// names the failed rank from mpirun's report, and restarts the whole mpirun (--max-restarts).
// Workers read their rank from OMPI_COMM_WORLD_* (core/dist_env.h).
//
//   auto cmd = mpirun_command(find_mpirun(), cfg, mpirun_environment(env));   // {"mpirun", "--tag-output", ...}
//   MpirunOutput relay(/*prefix=*/true);  relay.line("[1,0]<stdout>:hello") == "[rank 0] hello"
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/core/dist_env.h"
#include "lockstep/launch/launcher.h"

namespace lockstep::launch {

// The path of `name` (a path, or a name looked up in PATH; "": $LOCKSTEP_MPIRUN, else
// "mpirun"), checked to be Open MPI's mpirun (its --version). Throws ConfigError saying what
// to install (Debian/Ubuntu: openmpi-bin) when there is none.
std::string find_mpirun(const std::string& name = "", const EnvLookup& lookup = getenv_opt);

// The environment mpirun runs in: `env` (the job's variables, which -x forwards), RANK and
// the other torchrun variables emptied (a worker must take its rank from OMPI_COMM_WORLD_*,
// not from a launcher around this one), and container-safe Open MPI settings unless the
// user's environment sets them: ob1 over self+vader (shared memory), no single-copy (CMA),
// no binding, oversubscription allowed, no ssh agent, root allowed, a short TMPDIR.
std::map<std::string, std::string> mpirun_environment(std::map<std::string, std::string> env,
                                                      const EnvLookup& lookup = getenv_opt);

// mpirun --tag-output -n N -x VAR... PROGRAM ARGS, forwarding every non-empty job variable.
std::vector<std::string> mpirun_command(const std::string& mpirun, const LaunchConfig& cfg,
                                        const std::map<std::string, std::string>& env);

// Relays mpirun's output line by line: a tagged line "[1,R]<stdout>:text" (Open MPI 4) or
// "[JOB,R]<stdout>: text" (Open MPI 5) becomes "[rank R] text" (or "text" without prefixes);
// mpirun's own lines get "[mpirun] ". Also notes which rank mpirun says failed first and how.
class MpirunOutput {
 public:
  explicit MpirunOutput(bool prefix) : prefix_(prefix) {}
  std::string line(std::string_view text);

  // From mpirun's report: the first rank that failed (-1: not said) and how ("exited with
  // code 3", "killed by signal 9 (Killed)").
  int failed_rank() const { return failed_rank_; }
  const std::string& how() const { return how_; }

 private:
  void scan(std::string_view text);

  bool prefix_;
  int failed_rank_ = -1;
  std::string how_;
};

}  // namespace lockstep::launch
