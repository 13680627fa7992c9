// `lockstep sweep STUDY.toml`: hyper-parameter search over `lockstep train` jobs, driven by
// Optuna (its TPE sampler and pruners, SQLite storage in the study directory). This command
// finds the Python driver installed beside the program (share/lockstep/sweep/, in the build
// tree and after `cmake --install` alike) and replaces itself with it, so that a signal to this
// pid reaches the driver. The driver calls back `lockstep sweep --resolve-config FILE` to check
// a training configuration and read it with every default filled in.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "commands.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/train/config.h"

namespace lockstep::apps {

namespace {

namespace fs = std::filesystem;

constexpr const char* kDriverRel = "../share/lockstep/sweep/lockstep_sweep.py";

struct SweepFlags {
  std::string study;
  std::string python;
  std::string resolve;
};

fs::path self_exe() {
  return fs::read_symlink("/proc/self/exe");
}

// LOCKSTEP_SWEEP_DRIVER, else share/lockstep/sweep/ beside bin/ (installed) or apps/ (build).
fs::path find_driver() {
  if (auto env = getenv_opt("LOCKSTEP_SWEEP_DRIVER")) return *env;
  const fs::path p = (self_exe().parent_path() / kDriverRel).lexically_normal();
  if (!fs::exists(p))
    LOCKSTEP_THROW(ConfigError, "lockstep sweep: the Optuna driver ", p.string(),
                   " is missing; rebuild (it is "
                   "copied there by CMake) or reinstall lockstep, or set LOCKSTEP_SWEEP_DRIVER to "
                   "lockstep_sweep.py");
  return p;
}

// Prints the configuration of FILE as JSON with every key present (defaults filled in).
int resolve_config(const std::string& file) {
  const train::TrainConfig c = train::load_config(file);
  std::printf("%s\n", c.to_json().dump().c_str());
  return 0;
}

int exec_driver(const SweepFlags& f) {
  if (f.study.empty())
    LOCKSTEP_THROW(ConfigError,
                   "lockstep sweep: no study file given; usage: lockstep sweep STUDY.toml");
  if (::access(f.python.c_str(), X_OK) != 0)
    LOCKSTEP_THROW(ConfigError, "lockstep sweep: Python interpreter '", f.python,
                   "' not found or not executable; "
                   "install python3 and python3-optuna (Debian: apt-get install python3-optuna), "
                   "or pass --python "
                   "(or set LOCKSTEP_PYTHON) to one that has Optuna");
  const std::string driver = find_driver().string();
  const std::string exe = self_exe().string();
  std::vector<std::string> args = {f.python, driver, f.study, "--lockstep", exe};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(f.python.c_str(), argv.data());
  throw SystemError(errno, str_cat("lockstep sweep: cannot start ", f.python, " ", driver, ": ",
                                   std::strerror(errno)));
}

}  // namespace

Runner add_sweep_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "sweep",
      "Hyper-parameter search with Optuna over `lockstep train` jobs:\n  lockstep sweep "
      "STUDY.toml\n"
      "STUDY.toml holds [study] (dir, trials, parallel, workers, seed, trial_timeout), [objective] "
      "(metric: test_acc, test_loss or train_loss; direction), [pruner] (type: none, median, "
      "successive_halving), [base] (training keys, or base = \"train.toml\"), [space.KEY] (type "
      "float | int "
      "| categorical; low, high, log, step, choices) and optional [[enqueue]] tables. Each trial "
      "trains in "
      "STUDY_DIR/trials/NNNN; the study lives in STUDY_DIR/study.db, so a killed sweep run again "
      "goes on "
      "where it stopped. Writes STUDY_DIR/best.toml (rerun it with `lockstep train --config`) and "
      "STUDY_DIR/report/ (table and plots). Needs Optuna: apt-get install python3-optuna.");
  auto f = std::make_shared<SweepFlags>();
  f->python = getenv_opt("LOCKSTEP_PYTHON").value_or("/usr/bin/python3");
  cmd->add_option("study", f->study, "study TOML file");
  cmd->add_option("--python", f->python,
                  "Python 3 with Optuna (default $LOCKSTEP_PYTHON or /usr/bin/python3)")
      ->capture_default_str();
  cmd->add_option(
      "--resolve-config", f->resolve,
      "print FILE's training configuration as JSON, every default filled in (used by the driver)");
  return [f] { return f->resolve.empty() ? exec_driver(*f) : resolve_config(f->resolve); };
}

}  // namespace lockstep::apps
