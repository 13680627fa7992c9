// `lockstep run`: the launcher (the torchrun role) for any program built on the library.
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include "commands.h"

#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/launch/affinity.h"
#include "lockstep/launch/launcher.h"
#include "lockstep/launch/subprocess.h"
#include "lockstep/launch/torchrun_env.h"

namespace lockstep::apps {

namespace {

// --nproc-per-node N, or torchrun's auto / cpu (one worker per CPU this process may use).
int nproc_per_node(const std::string& v) {
  if (v == "auto" || v == "cpu") return std::max(1, int(launch::allowed_cpus().size()));
  if (v == "gpu")
    LOCKSTEP_THROW(ConfigError,
                   "--nproc-per-node gpu: lockstep's workers compute on CPUs and it does not "
                   "count GPUs; give the number of workers (e.g. one per GPU for --backend nccl)");
  int n = 0;
  char tail = 0;
  if (std::sscanf(v.c_str(), "%d%c", &n, &tail) != 1 || n < 1 || n > 1024)
    LOCKSTEP_THROW(ConfigError, "--nproc-per-node ", v,
                   ": give a number in [1, 1024], auto or cpu");
  return n;
}

// torchrun's rendezvous flags in lockstep's terms: --standalone, --rdzv-endpoint, --rdzv-backend.
void apply_torchrun_rendezvous(launch::LaunchConfig& c, std::string& nnodes, bool standalone,
                               const std::string& endpoint, const std::string& backend) {
  if (backend != "c10d" && backend != "static")
    LOCKSTEP_THROW(ConfigError, "--rdzv-backend ", backend,
                   ": lockstep meets at its own TCP store on node 0 "
                   "(torchrun's c10d, or static); give --rdzv-backend c10d or leave it out");
  if (standalone) {
    if (!endpoint.empty())
      LOCKSTEP_THROW(ConfigError,
                     "--standalone picks a free local port for the store; drop --rdzv-endpoint "
                     "or --standalone");
    if (nnodes != "1" && nnodes != "1:1")
      LOCKSTEP_THROW(ConfigError, "--standalone is a single-node job; drop --nnodes ", nnodes,
                     " or --standalone");
    nnodes = "1";
    c.master_addr = "127.0.0.1";
    c.master_port = 0;
  }
  if (endpoint.empty()) return;
  const size_t colon = endpoint.rfind(':');
  const bool has_port = colon != std::string::npos &&
                        endpoint.find(']', colon) == std::string::npos &&
                        endpoint.find(':') == colon;  // host:port, not a bare IPv6 address
  std::string host = has_port ? endpoint.substr(0, colon) : endpoint;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  c.master_addr = host;
  if (!has_port) return;  // torchrun's default port is 29400; keep lockstep's (--master-port)
  int port = -1;
  char tail = 0;
  if (std::sscanf(endpoint.c_str() + colon + 1, "%d%c", &port, &tail) != 1 || port < 0 ||
      port > 65535)
    LOCKSTEP_THROW(ConfigError, "--rdzv-endpoint ", endpoint,
                   ": the port must be a number in [0, 65535]");
  c.master_port = port;
}

// The program, found before any worker starts (said once, with the reason); `lockstep` itself
// when it is not in PATH; and `lockstep train` arguments checked here, once, as the workers
// would check them (bad values, unknown model, a run directory holding another run).
void resolve_program(launch::LaunchConfig& c) {
  if (c.command.empty()) return;  // launch_workers says what to give
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string path = getenv_opt("PATH").value_or("");
  if (c.command[0] == "lockstep") {
    try {
      launch::find_program("lockstep", path);
    } catch (const ConfigError&) {
      c.command[0] = self;
    }
  }
  if (!launch::is_python_script(c.command)) {
    const std::string exe = launch::find_program(c.command[0], path);
    std::error_code ec;
    const bool is_self = std::filesystem::equivalent(exe, self, ec);
    if (is_self && c.command.size() > 1 && c.command[1] == "train")
      check_train_args({c.command.begin() + 2, c.command.end()}, c.node_rank == 0);
  } else if (::access(c.command[0].c_str(), R_OK) != 0) {
    throw SystemError(errno, str_cat("program '", c.command[0], "' cannot be read"));
  }
}

}  // namespace

Runner add_run_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "run",
      "Start the workers of this node and watch them:\n"
      "  lockstep run --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port "
      "P] "
      "PROGRAM ARGS\n"
      "As with torchrun, everything from the program on belongs to it (`--` before it works too), "
      "and "
      "torchrun's spellings are taken: --nproc_per_node and the other underscore forms, "
      "--standalone, "
      "--rdzv-endpoint HOST:PORT, --rdzv-id, --rdzv-backend c10d, --nproc-per-node auto|cpu. The "
      "program is checked before any worker starts (and `lockstep train` arguments with it), so "
      "that "
      "what would fail on every rank is said once.\n"
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
  auto nproc = std::make_shared<std::string>("1");
  cmd->add_option(
      "--nproc-per-node", *nproc,
      "workers on this node: a number, or auto / cpu (torchrun's words): one per CPU this "
      "process may run on (lockstep's workers compute on CPUs; a GPU count is not taken)");
  auto standalone = std::make_shared<bool>(false);
  cmd->add_flag("--standalone", *standalone,
                "torchrun's single-node job: --nnodes 1 with the store on a free local port");
  auto endpoint = std::make_shared<std::string>();
  cmd->add_option("--rdzv-endpoint", *endpoint,
                  "torchrun's HOST[:PORT] of the rendezvous: the same as --master-addr HOST "
                  "--master-port PORT");
  cmd->add_option(
      "--rdzv-id", cfg->run_id,
      "torchrun's job id: the workers' TORCHELASTIC_RUN_ID and LOCKSTEP_JOB_ID (`lockstep train` "
      "records it with the run)");
  auto rdzv_backend = std::make_shared<std::string>("c10d");
  cmd->add_option(
         "--rdzv-backend", *rdzv_backend,
         "torchrun's rendezvous backend: c10d or static, both lockstep's TCP store on node 0 "
         "(etcd is not supported)")
      ->capture_default_str();
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
  cmd->add_option(
         "--failure-settle", *failure_settle_s,
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
  cmd->add_option(
      "--mpirun", cfg->mpirun,
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
  return [=] {
    cfg->nproc_per_node = nproc_per_node(*nproc);
    apply_torchrun_rendezvous(*cfg, *nnodes, *standalone, *endpoint, *rdzv_backend);
    if (!cfg->run_id.empty()) cfg->env["LOCKSTEP_JOB_ID"] = cfg->run_id;
    resolve_program(*cfg);
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
      LOCKSTEP_THROW(ConfigError, "--nnodes ", *nnodes,
                     ": give a node count N >= 1 or MIN:MAX with "
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
  static std::deque<std::string> renamed;  // storage of the words rewritten below
  std::vector<char*> out(argv, argv + argc);
  int i = 1;
  while (i < argc && argv[i][0] == '-') ++i;  // options of `lockstep` itself
  if (i == argc || std::strcmp(argv[i], "run") != 0) return out;
  const CLI::App* run = nullptr;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    if (sub->get_name() == "run") run = sub;
  for (int j = i + 1; j < argc; ++j) {
    std::string word = argv[j];
    if (word == "--") return out;
    if (word[0] != '-') {
      out.insert(out.begin() + j, separator);
      return out;
    }
    // torchrun's spellings: --nproc_per_node, --master_addr, ... (the name, not the value)
    const size_t eq = std::min(word.find('='), word.size());
    if (word.rfind("--", 0) == 0 && word.find('_') < eq) {
      std::replace(word.begin(), word.begin() + long(eq), '_', '-');
      out[size_t(j)] = renamed.emplace_back(word).data();
    }
    const CLI::Option* opt = run ? run->get_option_no_throw(word.substr(0, eq)) : nullptr;
    if (opt && opt->get_items_expected_min() > 0 && eq == word.size()) ++j;  // its value
  }
  return out;
}

}  // namespace lockstep::apps
