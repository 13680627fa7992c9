// The launcher (`lockstep run`, the torchrun role): starts the local workers of one node with
// the distributed environment set (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,
// MASTER_ADDR, MASTER_PORT, LOCKSTEP_STORE_TOKEN), hosts the rendezvous store on node 0,
// prefixes every output line with the worker's rank, forwards SIGINT/SIGTERM, and when one
// worker fails stops the others and returns a non-zero code naming the failed rank, and the
// rank missing from the collective that failed (from the flight recorders, flight_summary.h).
// Local workers are bound to their own CPUs when there are enough (affinity.h).
// With via = "mpirun" the workers are started by Open MPI's mpirun instead (mpirun.h), for
// the mpi backend.
//
//   LaunchConfig cfg;  cfg.nproc_per_node = 4;  cfg.command = {"./my_trainer", "--epochs", "2"};
//   int code = launch_workers(cfg);   // what `main` returns
#pragma once

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "lockstep/core/clock.h"

namespace lockstep::launch {

struct LaunchConfig {
  int nproc_per_node = 1;
  int nnodes = 1;                 // the number of nodes, or the maximum when elastic
  int min_nodes = 0;              // elastic (--nnodes MIN:MAX) when > 0: see elastic.h
  int node_rank = 0;              // elastic: 0 hosts the store, the others are numbered on arrival
  Millis rdzv_settle{std::chrono::seconds(3)};  // elastic: wait this long for more than MIN
  std::string master_addr = "127.0.0.1";
  int master_port = 0;            // 0: pick a free port (single node only)
  std::vector<std::string> command;
  int max_restarts = 0;           // restart the whole group up to this many times
  Millis grace{std::chrono::seconds(5)};  // SIGTERM -> SIGKILL delay when stopping workers
  Millis failure_settle{std::chrono::seconds(2)};  // a worker failed -> SIGTERM to the others
  Millis store_timeout{std::chrono::seconds(300)};
  std::map<std::string, std::string> env;  // extra environment for every worker
  // > 0: the MASTER_PORT workers see, free for a torchrun script's own c10d store; lockstep's
  // store is then at LOCKSTEP_STORE_PORT (torchrun_env.h).
  int program_master_port = 0;
  bool prefix_output = true;
  std::string run_id;             // torchrun's --rdzv-id: TORCHELASTIC_RUN_ID, LOCKSTEP_JOB_ID
  std::string via;                // "" (start the workers here) or "mpirun" (single node)
  std::string mpirun;             // via mpirun: its path ("": $LOCKSTEP_MPIRUN, else PATH)
  std::string cpu_bind;           // auto, none, cores; "": $LOCKSTEP_CPU_BIND, else auto (affinity.h)
  FILE* log = stderr;             // where the launcher's own messages go
  // Files to delete should the launcher die without cleaning up (kill -9): its watchdog
  // (watchdog.h), which also kills the workers' process groups then.
  std::vector<std::string> remove_if_killed;
};

// Runs the workers of this node to completion; returns the process exit code. Elastic
// (min_nodes > 0): rounds of rendezvous among the nodes' launchers, a new round after any
// failure (up to max_restarts) or when a node arrives while fewer than the maximum run.
// Throws ConfigError for an invalid configuration (before anything starts).
int launch_workers(const LaunchConfig& cfg);

// Checks that can fail before step 0, each with an error that says what to fix:
// the command is given and executable, the master address resolves, and (node 0) the port
// is free or (other nodes) reachable.
void preflight(const LaunchConfig& cfg);

// A random hex token for authenticating the job's store and data connections.
std::string make_job_token();

}  // namespace lockstep::launch
