// The `lockstep` command line: one program, one subcommand per job.
#include <cstdio>
#include <map>

#include "commands.h"
#include "lockstep/comm/backends/registry.h"
#include "lockstep/config.h"
#include "lockstep/core/error.h"

int main(int argc, char** argv) {
  // Explicit, so that no backend is lost to the linker dropping static initialisers.
  lockstep::comm::register_builtin_backends();
  CLI::App app{"lockstep: synchronous distributed data-parallel training"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("lockstep ") + LOCKSTEP_VERSION + "\n" +
                                        lockstep::comm::backends_summary());
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : runners) {
      if (sub->parsed()) return run();
    }
  } catch (const lockstep::Error& e) {
    std::fprintf(stderr, "lockstep: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
