// `lockstep report RUN_DIR`: turns a run's metrics.jsonl (and run.json) into plots of loss,
// accuracy and throughput (PNG through gnuplot, SVG when PNG is unavailable) and a short
// Markdown summary, all under RUN_DIR/report/.
//
//   ReportResult r = write_report(run_dir);
//   if (!r.plot_error.empty()) ...   // gnuplot missing or failed; report.md was still written
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lockstep::train {

struct ReportOptions {
  std::string gnuplot = "gnuplot";  // program name (looked up in PATH) or path
  std::filesystem::path out_dir;    // default: RUN_DIR/report
};

struct ReportResult {
  std::filesystem::path markdown;
  std::vector<std::filesystem::path> plots;
  std::string plot_error;  // empty when every plot was written
};

// DataError when RUN_DIR has no readable metrics.jsonl.
ReportResult write_report(const std::filesystem::path& run_dir, const ReportOptions& opts = {});

// Finds a program in PATH (or checks a path); empty when not found.
std::filesystem::path find_program(const std::string& name);
// Runs `program script` without a shell (output to `log`), stopped after 60 s; returns ""
// or what went wrong.
std::string run_gnuplot(const std::filesystem::path& program, const std::filesystem::path& script,
                        const std::filesystem::path& log);
// Inside gnuplot's single quotes a quote is written twice.
std::string gnuplot_quote(const std::string& s);

}  // namespace lockstep::train
