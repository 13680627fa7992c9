// `lockstep report RUN_DIR`: plots (loss, accuracy, throughput) and a Markdown summary of a
// training run, written to RUN_DIR/report/.
#include <memory>

#include "commands.h"
#include "lockstep/train/report.h"

namespace lockstep::apps {

Runner add_report_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "report",
      "Summarise a training run:\n  lockstep report RUN_DIR\n"
      "Reads RUN_DIR/metrics.jsonl and run.json; writes report.md and loss/accuracy/throughput "
      "plots (gnuplot: PNG, or SVG) to RUN_DIR/report/.");
  auto run_dir = std::make_shared<std::string>();
  auto opts = std::make_shared<train::ReportOptions>();
  auto out_dir = std::make_shared<std::string>();
  cmd->add_option("run_dir", *run_dir, "run directory of `lockstep train`")->required();
  cmd->add_option("--gnuplot", opts->gnuplot, "gnuplot program")->capture_default_str();
  cmd->add_option("--out", *out_dir, "output directory (default RUN_DIR/report)");
  return [run_dir, opts, out_dir] {
    if (!out_dir->empty()) opts->out_dir = *out_dir;
    const train::ReportResult r = train::write_report(*run_dir, *opts);
    std::printf("report: %s\n", r.markdown.c_str());
    for (const auto& p : r.plots) std::printf("plot: %s\n", p.c_str());
    if (!r.plot_error.empty()) {
      std::fprintf(stderr, "lockstep report: error: %s (the Markdown summary was still written)\n",
                   r.plot_error.c_str());
      return 1;
    }
    return 0;
  };
}

}  // namespace lockstep::apps
