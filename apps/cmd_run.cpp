// `lockstep run`: the launcher (the torchrun role) for any program built on the library.
#include "commands.h"
#include "lockstep/launch/launcher.h"

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
      "and exits non-zero naming the rank.");
  auto cfg = std::make_shared<launch::LaunchConfig>();
  auto grace_s = std::make_shared<double>(5.0);
  cmd->add_option("--nproc-per-node", cfg->nproc_per_node, "workers on this node")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--nnodes", cfg->nnodes, "number of nodes")->check(CLI::PositiveNumber);
  cmd->add_option("--node-rank", cfg->node_rank, "index of this node, 0 hosts the store")
      ->check(CLI::NonNegativeNumber);
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
  cmd->add_flag("!--no-prefix", cfg->prefix_output, "do not prefix output lines with the rank");
  cmd->add_option("command", cfg->command, "the program and its arguments (after --)")
      ->required();
  return [cfg, grace_s] {
    cfg->grace = Millis(int64_t(*grace_s * 1000));
    return launch::launch_workers(*cfg);
  };
}

}  // namespace lockstep::apps
