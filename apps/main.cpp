// The `lockstep` command line: one program, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "commands.h"
#include "help_format.h"
#include "lockstep/comm/backends/registry.h"
#include "lockstep/config.h"
#include "lockstep/core/error.h"

namespace {

// A usage error: what CLI11 found, the unknown options with suggestions, and where to look.
int usage_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  const CLI::App* cmd = &app;
  for (const CLI::App* sub : app.get_subcommands({}))
    if (sub->parsed()) cmd = sub;
  const std::string name = cmd == &app ? "lockstep" : "lockstep " + cmd->get_name();
  std::fprintf(stderr, "%s: error: %s%s\nRun `%s --help` for the accepted options.\n", name.c_str(), e.what(),
               cmd == &app ? "" : lockstep::apps::unknown_options(*cmd, argc, argv).c_str(), name.c_str());
  return e.get_exit_code();
}

}  // namespace

namespace lockstep::apps {

// The `--name` words of argv (before a `--`) that `cmd` has no option for, each with the
// known option sharing the longest prefix with it: "unknown option --epoch (did you mean
// --epochs?)". CLI11 alone reports only the words left over, which for `lockstep run` is the
// worker's command rather than the misspelt flag.
std::string unknown_options(const CLI::App& cmd, int argc, char** argv) {
  std::string out;
  for (int i = 1; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
    const std::string word = std::string(argv[i]).substr(0, std::string(argv[i]).find('='));
    if (word.rfind("--", 0) != 0 || word == "--help") continue;
    std::string best;
    size_t best_len = 4;  // "--" and at least two letters in common
    bool known = false;
    for (const CLI::Option* o : cmd.get_options()) {
      for (const std::string& name : o->get_lnames()) {
        const std::string full = "--" + name;
        known = known || full == word;
        size_t n = 0;
        while (n < full.size() && n < word.size() && full[n] == word[n]) ++n;
        if (n > best_len) best_len = n, best = full;
      }
    }
    if (known) continue;
    out += "\nlockstep " + cmd.get_name() + ": unknown option " + word +
           (best.empty() ? "" : " (did you mean " + best + "?)");
  }
  return out;
}

}  // namespace lockstep::apps

int main(int argc, char** argv) {
  // Explicit, so that no backend is lost to the linker dropping static initialisers.
  lockstep::comm::register_builtin_backends();
  CLI::App app{"lockstep: synchronous distributed data-parallel training"};
  app.formatter(std::make_shared<lockstep::apps::WrappingFormatter>(lockstep::apps::terminal_width()));
  app.require_subcommand(1);
  // A callback: the backends are tried (their plugins loaded) only when --version is asked.
  app.set_version_flag("--version", std::function<std::string()>([] {
                         return std::string("lockstep ") + LOCKSTEP_VERSION + "\n" +
                                lockstep::comm::backends_summary();
                       }),
                       "Print the version and the backends that load on this machine, then exit");
  std::map<CLI::App*, lockstep::apps::Runner> runners;
  auto add = [&](lockstep::apps::Runner (*f)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    auto runner = f(app);
    runners[app.get_subcommands({})[before]] = std::move(runner);
  };
  add(lockstep::apps::add_train_command);
  add(lockstep::apps::add_run_command);
  add(lockstep::apps::add_report_command);
  add(lockstep::apps::add_bench_command);
  add(lockstep::apps::add_selfcheck_command);
  add(lockstep::apps::add_checkpoints_command);
  add(lockstep::apps::add_sweep_command);
  add(lockstep::apps::add_plan_command);
  auto args = lockstep::apps::separate_run_program(app, argc, argv);
  try {
    app.parse(int(args.size()), args.data());
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return usage_error(app, e, int(args.size()), args.data());
  }
  try {
    for (auto& [sub, run] : runners) {
      if (sub->parsed()) return run();
    }
  } catch (const lockstep::Error& e) {
    std::fprintf(stderr, "lockstep: error: %s\n", e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {  // e.g. a run directory it cannot create
    std::fprintf(stderr, "lockstep: error: %s (check that the path exists and is writable, or pick "
                 "another --run-dir)\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
