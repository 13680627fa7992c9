// The subcommands of the `lockstep` program. Each registers its options on the CLI11 app and
// returns a function that runs it and gives the exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace lockstep::apps {

using Runner = std::function<int()>;

Runner add_train_command(CLI::App& app);
Runner add_run_command(CLI::App& app);
Runner add_report_command(CLI::App& app);
Runner add_bench_command(CLI::App& app);
Runner add_selfcheck_command(CLI::App& app);
Runner add_checkpoints_command(CLI::App& app);
Runner add_sweep_command(CLI::App& app);
Runner add_plan_command(CLI::App& app);

// argv with a `--` inserted before the program of `lockstep run [OPTIONS] PROGRAM ARGS` (the
// torchrun form), so that the program's own options are not read as lockstep's.
std::vector<char*> separate_run_program(const CLI::App& app, int argc, char** argv);

// The `--name` words of argv (before a `--`) that `cmd` has no option for, each on a line of
// its own with the known option sharing the longest prefix: "unknown option --epoch (did you
// mean --epochs?)".
std::string unknown_options(const CLI::App& cmd, int argc, char** argv);

// The checks `lockstep train ARGS` makes before its workers start (flags, values, model,
// backend, the run directory), for `lockstep run ... lockstep train ARGS` to make them once
// in the launcher. ConfigError as `lockstep train` would report it. The run directory only
// where `run_dir` (node 0, whose rank 0 takes the run; another node's launcher may start
// after that and would find the directory in use).
void check_train_args(const std::vector<std::string>& args, bool run_dir);

}  // namespace lockstep::apps
