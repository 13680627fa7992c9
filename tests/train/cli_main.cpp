// A `lockstep`-like program with only the train and report commands, so that the commands
// of apps/cmd_train.cpp and apps/cmd_report.cpp are tested end to end (multi-process
// launch, summary line, report) independently of how apps/main.cpp wires them.
#include <cstdio>

#include "commands.h"
#include "lockstep/core/error.h"

namespace lockstep::apps {
Runner add_train_command(CLI::App& app);
Runner add_report_command(CLI::App& app);
}  // namespace lockstep::apps

int main(int argc, char** argv) {
  CLI::App app{"train_cli: the train and report commands of lockstep"};
  app.require_subcommand(1);
  lockstep::apps::Runner train = lockstep::apps::add_train_command(app);
  lockstep::apps::Runner report = lockstep::apps::add_report_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return app.got_subcommand("train") ? train() : report();
  } catch (const lockstep::Error& e) {
    std::fprintf(stderr, "lockstep: error: %s\n", e.what());
    return 1;
  }
}
