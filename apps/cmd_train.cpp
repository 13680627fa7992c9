// `lockstep train`: trains a model with data parallelism. The configuration comes from a TOML
// file (--config) with flags overriding it. With --nproc N (and no RANK in the environment)
// the command starts N local workers itself through the launcher, each re-running this
// program with the merged configuration; under `lockstep run`, torchrun, mpirun or srun it is
// one worker of the job. The process that owns the job (the launcher, a single process, or
// rank 0 under another launcher) locks the run directory first (run_lock.h).
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <optional>

#include "commands.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/launch/launcher.h"
#include "lockstep/train/config.h"
#include "lockstep/train/file_io.h"
#include "lockstep/train/report.h"
#include "lockstep/train/run_lock.h"
#include "lockstep/train/setup.h"

namespace lockstep::apps {

namespace {

namespace fs = std::filesystem;

struct TrainFlags {
  std::string config;
  train::TrainConfig v;  // flag values; applied only for flags given
  int max_restarts = 0;
  std::vector<std::pair<CLI::Option*, std::function<void(train::TrainConfig&)>>> overrides;
};

template <class T>
void flag(CLI::App* cmd, TrainFlags& f, const std::string& name, T train::TrainConfig::*member,
          const std::string& help) {
  CLI::Option* o = cmd->add_option(name, f.v.*member, help);
  f.overrides.emplace_back(o, [&f, member](train::TrainConfig& c) { c.*member = f.v.*member; });
}

// A switch (--name, no value) that sets a boolean key.
void switch_flag(CLI::App* cmd, TrainFlags& f, const std::string& name, bool train::TrainConfig::*member,
                 const std::string& help) {
  CLI::Option* o = cmd->add_flag(name, f.v.*member, help);
  f.overrides.emplace_back(o, [&f, member](train::TrainConfig& c) { c.*member = f.v.*member; });
}

// Where a key's value came from, for errors: the flag that set it, else the config file.
std::string origin_of(const TrainFlags& f, const std::string& key) {
  for (const auto& [opt, apply] : f.overrides) {
    std::string k = opt->get_name().substr(2);  // "--checkpoint-every" -> "checkpoint_every"
    std::replace(k.begin(), k.end(), '-', '_');
    if (opt->count() > 0 && (k == key || k + "_dir" == key))
      return str_cat("flag ", opt->get_name());
  }
  return f.config.empty() ? std::string("default") : f.config;
}

// A worker of an already launched job, or a single process. Rank 0 writes the report.
int run_here(const train::TrainConfig& c) {
  const DistEnv env = read_dist_env();
  std::optional<train::RunDirLock> lock;  // unless this job's launcher holds it
  if (train::run_dir_lock_needed(c.run_dir, env.rank))
    lock.emplace(c.run_dir, env.world_size > 1 ? str_cat("lockstep train, rank 0 of ", env.world_size)
                                               : std::string("lockstep train --nproc 1"));
  const train::TrainResult r = train::run_worker(c);
  // Workers, and a finished run (its report stands), are done here.
  if (env.rank != 0 || r.already_complete) return r.stopped ? 1 : 0;
  const train::ReportResult rep = train::write_report(c.run_dir);
  std::printf("report: %s\n", rep.markdown.c_str());
  if (!rep.plot_error.empty()) std::fprintf(stderr, "lockstep train: plots not drawn: %s\n", rep.plot_error.c_str());
  return 0;
}

// Starts c.nproc local workers of this same program on the merged configuration.
int launch(const train::TrainConfig& c, int max_restarts) {
  // Held for the job's life, restarts included (a second job fails here at once).
  const train::RunDirLock lock(c.run_dir, str_cat("lockstep train --nproc ", c.nproc));
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
  lc.env[train::kRunDirLockEnv] = fs::weakly_canonical(c.run_dir).string();  // workers: do not lock again
  lc.command = {fs::read_symlink("/proc/self/exe").string(), "train", "--config", cfg_file.string()};
  lc.remove_if_killed = {cfg_file.string()};    // by the launcher's watchdog after a kill -9
  const int code = launch::launch_workers(lc);  // rank 0 prints the summary and report path
  return code;
}

}  // namespace

Runner add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train",
      "Train a model with synchronous data parallelism:\n"
      "  lockstep train [--config FILE.toml] [--model fmnist-cnn] [--nproc N] [--epochs E] ...\n"
      "Flags override the TOML file; its keys are: " + [] {
        std::string keys;
        for (const auto& k : train::config_keys()) keys += (keys.empty() ? "" : ", ") + k;
        return keys;
      }() + ".\nWrites metrics.jsonl, run.json, checkpoints/ and report/ in the run directory and "
      "ends with a summary line (samples/s, test_acc=). A run directory holds one run: a new run where "
      "one is refused unless --resume auto (continue it) or --overwrite; `lockstep checkpoints` lists, "
      "verifies and rolls back its checkpoints.");
  auto f = std::make_shared<TrainFlags>();
  cmd->add_option("--config", f->config, "TOML file with the training configuration")->check(CLI::ExistingFile);
  flag(cmd, *f, "--model", &train::TrainConfig::model, "model: fmnist-mlp, fmnist-cnn, char-gpt");
  flag(cmd, *f, "--data", &train::TrainConfig::data_dir, "dataset directory (IDX files) or text file");
  flag(cmd, *f, "--epochs", &train::TrainConfig::epochs, "epochs to train");
  flag(cmd, *f, "--batch", &train::TrainConfig::batch, "batch size per worker");
  flag(cmd, *f, "--lr", &train::TrainConfig::lr, "learning rate (before the scaling rule)");
  flag(cmd, *f, "--optimizer", &train::TrainConfig::optimizer, "sgd or adamw");
  switch_flag(cmd, *f, "--zero", &train::TrainConfig::zero,
              "ZeRO stage 1: shard the SGD momentum over the workers (zero = true; needs optimizer sgd, "
              "clip 0); checkpoints keep one shard per worker and resume at any number of workers");
  flag(cmd, *f, "--backend", &train::TrainConfig::backend, "process group backend (native, ...)");
  flag(cmd, *f, "--nproc", &train::TrainConfig::nproc, "local workers to start (1: this process)");
  flag(cmd, *f, "--run-dir", &train::TrainConfig::run_dir,
       "directory for metrics, checkpoints and the report; one job at a time (RUN_DIR/.lock: a second job "
       "fails at once naming the first's pid and host)");
  flag(cmd, *f, "--checkpoint-every", &train::TrainConfig::checkpoint_every, "steps between checkpoints (0: at the end)");
  flag(cmd, *f, "--resume", &train::TrainConfig::resume,
       "checkpoint, checkpoints dir or run dir to continue; 'auto': the newest intact checkpoint of the run "
       "dir's current lineage, if any. An older checkpoint of this run dir starts a new lineage from it (a "
       "rollback; the later ones are kept as an abandoned branch). state.json is checksummed and "
       "cross-checked (step, tensors, data set, sampler); a run already at its last step says so and exits 0");
  switch_flag(cmd, *f, "--overwrite", &train::TrainConfig::overwrite,
              "a new run in a run dir that holds an earlier run deletes it (without this flag, or --resume, "
              "such a run is refused)");
  flag(cmd, *f, "--checkpoint-keep", &train::TrainConfig::checkpoint_keep,
       "newest checkpoints of the current lineage kept (0: all)");
  flag(cmd, *f, "--checkpoint-keep-every", &train::TrainConfig::checkpoint_keep_every,
       "also keep every checkpoint whose step is a multiple of K (0: off)");
  flag(cmd, *f, "--checkpoint-keep-best", &train::TrainConfig::checkpoint_keep_best,
       "also keep the N best checkpoints by --checkpoint-best-metric (those with an eval at their step)");
  flag(cmd, *f, "--checkpoint-best-metric", &train::TrainConfig::checkpoint_best_metric,
       "test_loss (lowest is best) or test_acc (highest)");
  flag(cmd, *f, "--seed", &train::TrainConfig::seed, "seed of initialisation and data order");
  flag(cmd, *f, "--max-steps", &train::TrainConfig::max_steps, "stop after this many optimizer steps");
  flag(cmd, *f, "--timeout", &train::TrainConfig::timeout,
       "seconds to wait for the store, the other ranks' pre-flight and each collective");
  cmd->add_option("--max-restarts", f->max_restarts, "with --nproc: restart all workers up to K times, each time from the newest intact checkpoint of the "
                  "lineage this job started")
      ->check(CLI::NonNegativeNumber);
  return [f] {
    train::TrainConfig c = f->config.empty() ? train::TrainConfig{} : train::load_config(f->config);
    for (auto& [opt, apply] : f->overrides)
      if (opt->count() > 0) apply(c);
    // Here, before any worker starts: a worker would name only the launcher's hidden file.
    train::check_values(c, [&](const std::string& key) { return origin_of(*f, key); });
    try {
      train::validate(c);
    } catch (const ConfigError& e) {
      LOCKSTEP_THROW(ConfigError, "after applying the flags: ", e.what());
    }
    const bool is_worker = getenv_opt("RANK").has_value() || getenv_opt("OMPI_COMM_WORLD_RANK").has_value() ||
                           getenv_opt("SLURM_PROCID").has_value();
    if (c.nproc > 1 && !is_worker) return launch(c, f->max_restarts);
    return run_here(c);
  };
}

}  // namespace lockstep::apps
