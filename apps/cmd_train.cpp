// `lockstep train`: trains a model with data parallelism. The configuration comes from a TOML
// file (--config) with flags overriding it. With --nproc N (and no RANK in the environment)
// the command starts N local workers itself through the launcher, each re-running this
// program with the merged configuration; under `lockstep run`, torchrun, mpirun or srun it is
// one worker of the job. The process that owns the job (the launcher, a single process, or
// rank 0 under another launcher) locks the run directory first (run_lock.h).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "commands.h"
#include "lockstep/comm/backends/registry.h"
#include "profile_run.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/launch/launcher.h"
#include "lockstep/nn/models.h"
#include "lockstep/train/config.h"
#include "lockstep/train/file_io.h"
#include "lockstep/train/report.h"
#include "lockstep/train/run_lock.h"
#include "lockstep/train/run_start.h"
#include "lockstep/train/setup.h"

namespace lockstep::apps {

namespace {

namespace fs = std::filesystem;

struct TrainFlags {
  std::string config;
  bool print_config = false;
  std::string profile;  // --profile FILE: not a key (a profile run, not a training setting)
  // One option per config key (`--grad-accum` for grad_accum), applied in key order when
  // given. std::map: the values' addresses stay put while CLI11 holds them.
  std::map<std::string, std::string> text;
  std::map<std::string, bool> on;
  std::vector<std::pair<CLI::Option*, std::string>> keys;  // option, key
};

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string flag_name(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return "--" + key;
}

// Registers a flag for every key of the configuration file, with the key's help text.
void add_key_flags(CLI::App* cmd, TrainFlags& f) {
  for (const train::KeyInfo& k : train::config_key_info()) {
    std::string names = flag_name(k.name);
    if (k.name == "data_dir") names += ",--data";  // the flag's name before issue 22
    CLI::Option* o = nullptr;
    if (k.kind == train::KeyKind::boolean) {
      // --zero / --no-zero, and --zero=false as in a file
      o = cmd->add_flag(names + ",!--no-" + names.substr(2), f.on[k.name], k.doc);
    } else {
      o = cmd->add_option(names, f.text[k.name], k.doc)
              ->type_name(k.kind == train::KeyKind::integer  ? "INT"
                          : k.kind == train::KeyKind::number ? "FLOAT"
                                                             : "TEXT");
    }
    f.keys.emplace_back(o, k.name);
  }
}

// Defaults, then the file, then the flags given; every value checked, errors naming the flag
// or the file. Here, before any worker starts: a worker would name only the launcher's file.
train::TrainConfig merged_config(const TrainFlags& f) {
  train::TrainConfig c = f.config.empty() ? train::TrainConfig{} : train::load_config(f.config);
  for (const auto& [opt, key] : f.keys) {
    if (opt->count() == 0) continue;
    const auto on = f.on.find(key);
    train::set_key(c, key, on != f.on.end() ? (on->second ? "true" : "false") : f.text.at(key),
                   str_cat("flag ", opt->get_name()));
  }
  try {
    train::validate(c);
  } catch (const ConfigError& e) {
    LOCKSTEP_THROW(ConfigError, "after applying the flags: ", e.what());
  }
  return c;
}

// A worker of an already launched job, or a single process. Rank 0 writes the report.
int run_here(const train::TrainConfig& c) {
  const DistEnv env = read_dist_env();
  std::optional<train::RunDirLock> lock;  // unless this job's launcher holds it
  if (train::run_dir_lock_needed(c.run_dir, env.rank))
    lock.emplace(c.run_dir, env.world_size > 1
                                ? str_cat("lockstep train, rank 0 of ", env.world_size)
                                : std::string("lockstep train --nproc 1"));
  const train::TrainResult r = train::run_worker(c);
  // Workers, and a finished run (its report stands), are done here.
  if (env.rank != 0 || r.already_complete) return r.stopped ? 1 : 0;
  const train::ReportResult rep = train::write_report(c.run_dir);
  std::printf("report: %s\n", rep.markdown.c_str());
  if (!rep.plot_error.empty())
    std::fprintf(stderr, "lockstep train: plots not drawn: %s\n", rep.plot_error.c_str());
  return 0;
}

// Starts c.nproc local workers of this same program on the merged configuration.
int launch(const train::TrainConfig& c, int max_restarts) {
  // Held for the job's life, restarts included (a second job fails here at once).
  const train::RunDirLock lock(c.run_dir, str_cat("lockstep train --nproc ", c.nproc));
  // A run dir holding another run is refused here, once, rather than by rank 0 after the
  // workers started (start_run only reads; rank 0 decides again and commits).
  (void)train::start_run(c, train::RunStartEnv{});
  // The workers read the merged configuration from a file that lives as long as the job and
  // has a name of its own, so a job that fails at once leaves an earlier run's files as they
  // were (run.json keeps the configuration of a run that started).
  const fs::path cfg_file = fs::path(c.run_dir) / str_cat(".launch-", ::getpid(), ".toml");
  struct RemoveAtExit {
    fs::path path;
    ~RemoveAtExit() {
      std::error_code ec;
      fs::remove(path, ec);
    }
  } remove_cfg{cfg_file};
  // A restarted worker (LOCKSTEP_RESTART_COUNT > 0) continues the lineage this job started,
  // from its newest intact checkpoint, whatever --resume says (train/run_start.h).
  train::write_file_atomic(cfg_file, train::config_to_toml(c));
  launch::LaunchConfig lc;
  lc.nproc_per_node = c.nproc;
  lc.max_restarts = max_restarts;
  lc.env[train::kRunDirLockEnv] =
      fs::weakly_canonical(c.run_dir).string();  // workers: do not lock again
  lc.command = {fs::read_symlink("/proc/self/exe").string(), "train", "--config",
                cfg_file.string()};
  lc.remove_if_killed = {cfg_file.string()};    // by the launcher's watchdog after a kill -9
  const int code = launch::launch_workers(lc);  // rank 0 prints the summary and report path
  return code;
}

}  // namespace

namespace {

const char* kTrainHelp =
    "Train a model with synchronous data parallelism:\n"
    "  lockstep train [--config FILE.toml] [--model fmnist-cnn] [--nproc N] [--epochs E] ...\n"
    "Every key of the TOML file has a flag of the same name (key grad_accum: --grad-accum); flags "
    "override the file, and --print-config shows the result as a TOML file. Writes metrics.jsonl, "
    "run.json, checkpoints/ and report/ in the run directory and ends with a summary line "
    "(samples/s, test_acc=). A run directory holds one run: a new run where one is refused unless "
    "--resume auto (continue it) or --overwrite; `lockstep checkpoints` lists, verifies and rolls "
    "back its checkpoints.";

void add_train_flags(CLI::App* cmd, TrainFlags& f) {
  cmd->add_option("--config", f.config,
                  "TOML file with the training configuration (keys as the flags below)")
      ->check(CLI::ExistingFile);
  cmd->add_flag(
      "--print-config", f.print_config,
      "print the configuration (defaults, --config file and flags merged) as TOML and exit");
  cmd->add_option("--profile", f.profile,
                  "record a step profile for `lockstep plan` in FILE (JSON: bucket sizes and ready "
                  "times, forward/backward/optimizer time; needs 2+ workers; 20 steps unless "
                  "--max-steps)");
  add_key_flags(cmd, f);
}

// What every worker would refuse alike, said once here: a model or backend this program does
// not have, the mpi backend without an MPI launcher, a run directory that holds another run.
void check_before_start(const train::TrainConfig& c) {
  const auto models = nn::model_names();
  if (std::find(models.begin(), models.end(), c.model) == models.end())
    LOCKSTEP_THROW(ConfigError, "model (--model) '", c.model,
                   "' is not one of: ", join(models, ", "));
  if (c.backend == "mpi" && c.nproc > 1)
    LOCKSTEP_THROW(ConfigError, "--backend mpi: `lockstep train --nproc ", c.nproc,
                   "` cannot start MPI ranks; "
                   "let mpirun start them: `lockstep run --via mpirun --nproc-per-node ",
                   c.nproc, " lockstep train --backend mpi ...` (or `mpirun -n ", c.nproc,
                   " lockstep train --backend mpi ...`, with --allow-run-as-root as root)");
  const std::string why = comm::backend_unavailable_reason(c.backend, 1);
  if (!why.empty()) LOCKSTEP_THROW(ConfigError, "--backend ", c.backend, ": ", why);
}

}  // namespace

Runner add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", kTrainHelp);
  auto f = std::make_shared<TrainFlags>();
  add_train_flags(cmd, *f);
  return [f] {
    const std::string& profile = f->profile;
    train::TrainConfig c = merged_config(*f);
    if (f->print_config) {
      std::fputs(train::config_to_toml(c).c_str(), stdout);
      return 0;
    }
    const bool is_worker = getenv_opt("RANK").has_value() ||
                           getenv_opt("OMPI_COMM_WORLD_RANK").has_value() ||
                           getenv_opt("SLURM_PROCID").has_value();
    if (!is_worker) check_before_start(c);
    const int world = is_worker ? read_dist_env().world_size : c.nproc;
    if (!profile.empty()) prepare_profile(c, profile, world);
    const bool launcher = c.nproc > 1 && !is_worker;
    const int code = launcher ? launch(c, c.max_restarts) : run_here(c);
    // The launcher reads every rank's trace; a worker of another launcher, rank 0's own.
    if (!profile.empty() && code == 0 && (launcher || read_dist_env().rank == 0))
      finish_profile(c, profile, world, launcher ? c.nproc : 1);
    return code;
  };
}

void check_train_args(const std::vector<std::string>& args, bool run_dir) {
  CLI::App app;
  auto* cmd = app.add_subcommand("train", kTrainHelp);
  TrainFlags f;
  add_train_flags(cmd, f);
  std::vector<std::string> rev{args.rbegin(), args.rend()};
  rev.push_back("train");
  try {
    app.parse(rev);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return;  // --help: the workers print it
    std::vector<std::string> words = {"train"};
    words.insert(words.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    LOCKSTEP_THROW(ConfigError, "lockstep train: ", e.what(),
                   unknown_options(*cmd, int(argv.size()), argv.data()));
  }
  train::TrainConfig c = merged_config(f);
  c.nproc = 1;  // the launcher starts the workers
  if (f.print_config) return;
  check_before_start(c);
  if (!run_dir) return;
  const train::RunDirLock probe(c.run_dir, "lockstep run (checking the run directory)");
  (void)train::start_run(c, train::RunStartEnv{});  // a run dir holding another run, said once
}

}  // namespace lockstep::apps
