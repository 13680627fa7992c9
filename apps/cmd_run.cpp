// `lockstep run`: the launcher (the torchrun role) for any program built on the library.
#include "commands.h"
#include <cstdio>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/launch/launcher.h"
#include "lockstep/launch/torchrun_env.h"

namespace lockstep::apps {

Runner add_run_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "run",
      "Start the workers of this node and watch them:\n"
      "  lockstep run --nproc-per-node N [--nnodes M --node-rank R --master-addr A "
      "--master-port P] -- PROGRAM ARGS\n"
      "Sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and "
      "LOCKSTEP_STORE_TOKEN for each worker, hosts the rendezvous store on node 0, prefixes "
      "output with the rank, forwards SIGINT/SIGTERM, and when a worker fails stops the others "
      "and exits non-zero naming the rank.\n"
      "Elastic: --nnodes MIN:MAX --max-restarts K: the node launchers meet in rounds; a worker "
      "failure or a lost node (10 s without its launcher's heartbeat) starts a new round with "
      "the nodes left (at least MIN), a newly arrived node one with more (at most MAX). Each "
      "round sets WORLD_SIZE and LOCKSTEP_RESTART_COUNT anew; workers resume from their "
      "checkpoint (`lockstep train` does with --resume auto).\n"
      "After a failure in a collective, one line names the rank(s) missing from it, from the "
      "workers' flight recorders.\n"
      "MPI: --via mpirun starts the N workers of this node with Open MPI's mpirun (needed by "
      "--backend mpi): `lockstep run --via mpirun --nproc-per-node 4 -- PROGRAM --backend mpi`.");
  auto cfg = std::make_shared<launch::LaunchConfig>();
  auto grace_s = std::make_shared<double>(5.0);
  cmd->add_option("--nproc-per-node", cfg->nproc_per_node, "workers on this node")
      ->check(CLI::Range(1, 1024));
  auto nnodes = std::make_shared<std::string>("1");
  cmd->add_option("--nnodes", *nnodes,
                  "number of nodes, or MIN:MAX for elastic membership (nodes may leave or join; "
                  "each change restarts the workers, who resume from their checkpoint)");
  cmd->add_option("--node-rank", cfg->node_rank,
                  "index of this node; 0 hosts the store (elastic: other nodes are numbered as "
                  "they arrive, give them any other value)")
      ->check(CLI::NonNegativeNumber);
  auto settle_s = std::make_shared<double>(3.0);
  cmd->add_option("--rdzv-settle", *settle_s,
                  "elastic: seconds to wait for more nodes once MIN have joined a round")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--master-addr", cfg->master_addr, "address of node 0 (the store)")
      ->capture_default_str();
  cmd->add_option("--master-port", cfg->master_port,
                  "port of the store on node 0; 0 picks a free one (single node)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--max-restarts", cfg->max_restarts,
                  "restart all workers up to this many times when one fails")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--grace", *grace_s, "seconds between SIGTERM and SIGKILL when stopping")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  auto failure_settle_s = std::make_shared<double>(2.0);
  cmd->add_option("--failure-settle", *failure_settle_s,
                  "seconds the other workers get to exit on their own after one fails, so that each "
                  "reports an error they share, before they are sent SIGTERM; a worker found killed "
                  "by a signal meanwhile is reported as the failure rather than a peer that saw it die")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--via", cfg->via,
                  "mpirun: start the workers with Open MPI's mpirun (single node; for the mpi "
                  "backend), forwarding the job's environment; container-safe Open MPI settings "
                  "unless OMPI_MCA_* are set")
      ->check(CLI::IsMember({"mpirun"}));
  cmd->add_option("--mpirun", cfg->mpirun,
                  "with --via mpirun: the mpirun to use (default: $LOCKSTEP_MPIRUN, else mpirun in PATH)");
  cmd->add_option("--cpu-bind", cfg->cpu_bind,
                  "auto: bind each local worker to its own cores when there are at least as many "
                  "CPUs as workers (default; env LOCKSTEP_CPU_BIND); none; cores: always")
      ->check(CLI::IsMember({"auto", "none", "cores"}));
  cmd->add_flag("!--no-prefix", cfg->prefix_output, "do not prefix output lines with the rank");
  cmd->add_option("command", cfg->command,
                  "the program and its arguments (after --, or from the first word that is not "
                  "an option, as with torchrun); a .py program runs with $LOCKSTEP_PYTHON, else "
                  "/usr/bin/python3, and gets torchrun's environment with MASTER_ADDR/MASTER_PORT "
                  "free for its own c10d store (lockstep's store moves to LOCKSTEP_STORE_PORT)")
      ->required();
  return [cfg, grace_s, failure_settle_s, nnodes, settle_s] {
    cfg->grace = Millis(int64_t(*grace_s * 1000));
    cfg->failure_settle = Millis(int64_t(*failure_settle_s * 1000));
    cfg->rdzv_settle = Millis(int64_t(*settle_s * 1000));
    int lo = 0, hi = 0;
    char tail = 0;
    if (std::sscanf(nnodes->c_str(), "%d:%d%c", &lo, &hi, &tail) == 2 && lo >= 1 && hi >= lo) {
      cfg->min_nodes = lo;
      cfg->nnodes = hi;
    } else if (std::sscanf(nnodes->c_str(), "%d%c", &hi, &tail) == 1 && hi >= 1) {
      cfg->nnodes = hi;
    } else {
      LOCKSTEP_THROW(ConfigError, "--nnodes ", *nnodes, ": give a node count N >= 1 or MIN:MAX with "
                     "1 <= MIN <= MAX (elastic)");
    }
    if (launch::is_python_script(cfg->command)) {
      cfg->command = launch::with_python(cfg->command);
      // Every node must agree on it: the port after lockstep's, or a free one on one node.
      cfg->program_master_port =
          cfg->master_port > 0 ? cfg->master_port + 1 : launch::pick_free_port(cfg->master_addr);
    }
    return launch::launch_workers(*cfg);
  };
}

std::vector<char*> separate_run_program(const CLI::App& app, int argc, char** argv) {
  static char separator[] = "--";
  std::vector<char*> out(argv, argv + argc);
  int i = 1;
  while (i < argc && argv[i][0] == '-') ++i;  // options of `lockstep` itself
  if (i == argc || std::strcmp(argv[i], "run") != 0) return out;
  const CLI::App* run = nullptr;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    if (sub->get_name() == "run") run = sub;
  for (int j = i + 1; j < argc; ++j) {
    const std::string word = argv[j];
    if (word == "--") return out;
    if (word[0] != '-') {
      out.insert(out.begin() + j, separator);
      return out;
    }
    const CLI::Option* opt = run ? run->get_option_no_throw(word) : nullptr;
    if (opt && opt->get_items_expected_min() > 0 && word.find('=') == std::string::npos) ++j;  // its value
  }
  return out;
}

}  // namespace lockstep::apps
