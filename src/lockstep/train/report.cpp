#include "lockstep/train/report.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "lockstep/core/error.h"
#include "lockstep/train/file_io.h"
#include "lockstep/train/metrics.h"

extern char** environ;

namespace lockstep::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Series {
  std::vector<json> steps, evals;  // one record per step (the last one logged wins)
  json run = json::object();
};

double num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

Series load_series(const fs::path& run_dir) {
  Series s;
  std::map<int64_t, json> steps, evals;
  for (auto& r : read_jsonl(run_dir / "metrics.jsonl")) {
    if (!r.contains("step") || !r["step"].is_number_integer()) continue;
    const int64_t step = r["step"].get<int64_t>();
    if (r.value("kind", "") == "step") steps[step] = std::move(r);
    else if (r.value("kind", "") == "eval") evals[step] = std::move(r);
  }
  for (auto& [_, r] : steps) s.steps.push_back(std::move(r));
  for (auto& [_, r] : evals) s.evals.push_back(std::move(r));
  std::ifstream in(run_dir / "run.json");
  if (in) {
    json run = json::parse(in, nullptr, false);
    if (run.is_object()) s.run = std::move(run);
  }
  return s;
}

std::string fmt(double v, const char* f = "%.4f") {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void write_data(const fs::path& path, const std::vector<json>& recs,
                std::initializer_list<const char*> cols) {
  std::ostringstream out;
  for (const auto& r : recs) {
    out << r["step"].get<int64_t>();
    for (const char* c : cols) {
      const double v = num(r, c);
      out << ' ' << (std::isfinite(v) ? fmt(v, "%.9g") : std::string("NaN"));
    }
    out << '\n';
  }
  write_file_atomic(path, out.str());
}

std::string median_throughput(const std::vector<json>& steps) {
  std::vector<double> v;
  for (const auto& r : steps)
    if (double x = num(r, "samples_per_s"); std::isfinite(x) && x > 0) v.push_back(x);
  if (v.empty()) return "n/a";
  std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
  return fmt(v[v.size() / 2], "%.0f");
}

std::string markdown(const Series& s, const std::vector<fs::path>& plots, const std::string& err) {
  std::ostringstream md;
  const json& cfg = s.run.value("config", json::object());
  md << "# lockstep run report\n\n";
  md << "| | |\n|---|---|\n";
  md << "| model | " << cfg.value("model", std::string("?")) << " |\n";
  md << "| world size | " << s.run.value("world_size", 0) << " |\n";
  md << "| backend | " << s.run.value("backend", std::string("?")) << " |\n";
  md << "| host | " << s.run.value("hostname", std::string("?")) << " |\n";
  md << "| started | " << s.run.value("start_time", std::string("?")) << " |\n";
  md << "| steps logged | " << s.steps.size() << " |\n";
  if (!s.steps.empty()) {
    const json& last = s.steps.back();
    md << "| last step | " << last["step"].get<int64_t>() << " (epoch " << last.value("epoch", 0)
       << ") |\n";
    md << "| final train loss | " << fmt(num(last, "loss")) << " |\n";
    md << "| median throughput | " << median_throughput(s.steps) << " samples/s |\n";
    md << "| training time | " << fmt(num(last, "time_s"), "%.1f") << " s |\n";
  }
  if (!s.evals.empty()) {
    const json& last = s.evals.back();
    double best = 0;
    for (const auto& e : s.evals) best = std::max(best, num(e, "accuracy"));
    md << "| final test accuracy | " << fmt(100 * num(last, "accuracy"), "%.2f") << "% |\n";
    md << "| best test accuracy | " << fmt(100 * best, "%.2f") << "% |\n";
    md << "| final test loss | " << fmt(num(last, "loss")) << " |\n";
  }
  md << "\n";
  for (const auto& p : plots) md << "![" << p.stem().string() << "](" << p.filename().string() << ")\n\n";
  if (!err.empty()) md << "> Plots not drawn: " << err << "\n";
  return md.str();
}

std::string plot_script(const std::string& terminal, const std::string& ext, const Series& s) {
  std::ostringstream g;
  g << "set terminal " << terminal << "\nset grid\nset key top right\nset xlabel 'step'\n";
  g << "set output 'loss." << ext << "'\nset title 'loss'\nplot 'steps.dat' using 1:2 with lines title 'train'";
  if (!s.evals.empty()) g << ", 'evals.dat' using 1:2 with linespoints title 'test'";
  g << "\n";
  if (!s.evals.empty())
    g << "set output 'accuracy." << ext << "'\nset title 'test accuracy'\nset yrange [0:1]\n"
      << "plot 'evals.dat' using 1:3 with linespoints title 'accuracy'\nset autoscale y\n";
  g << "set output 'learning_rate." << ext << "'\nset title 'learning rate'\nset ylabel 'lr'\n"
    << "plot 'steps.dat' using 1:4 with lines title 'lr'\n";
  // From 0, so that a dip reads as its true share of the rate.
  g << "set output 'throughput." << ext << "'\nset title 'throughput'\nset ylabel 'samples/s'\n"
    << "set yrange [0:*]\nplot 'steps.dat' using 1:3 with lines title 'samples/s'\nset autoscale y\n";
  return g.str();
}

}  // namespace

std::string run_gnuplot(const fs::path& program, const fs::path& script, const fs::path& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::string prog = program.string(), arg = script.string();
  char* argv[] = {prog.data(), arg.data(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, prog.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return str_cat("cannot start ", prog, ": ", std::strerror(rc));
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return str_cat(prog, " ran for more than 60 s and was stopped");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  return str_cat(prog, " failed (see ", log.string(), ")");
}

std::string gnuplot_quote(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out;
}

fs::path find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? fs::path(name) : fs::path();
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const fs::path p = fs::path(dir.empty() ? "." : dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

ReportResult write_report(const fs::path& run_dir, const ReportOptions& opts) {
  if (!fs::exists(run_dir / "metrics.jsonl"))
    LOCKSTEP_THROW(DataError, (run_dir / "metrics.jsonl").string(),
                   ": not found; is ", run_dir.string(), " a run directory of `lockstep train`?");
  const Series s = load_series(run_dir);
  ReportResult r;
  const fs::path out = opts.out_dir.empty() ? run_dir / "report" : opts.out_dir;
  fs::create_directories(out);
  write_data(out / "steps.dat", s.steps, {"loss", "samples_per_s", "lr"});
  write_data(out / "evals.dat", s.evals, {"loss", "accuracy"});
  const fs::path gnuplot = find_program(opts.gnuplot);
  if (s.steps.empty()) {
    r.plot_error = "no step records in metrics.jsonl";
  } else if (gnuplot.empty()) {
    r.plot_error = str_cat("'", opts.gnuplot, "' not found in PATH; install gnuplot (Debian: "
                           "apt-get install gnuplot-nox) and run `lockstep report` again");
  } else {
    // PNG through cairo or libgd; SVG needs no library at all.
    for (auto [term, ext] : {std::pair{"pngcairo size 900,540", "png"}, {"png size 900,540", "png"},
                             {"svg size 900,540", "svg"}}) {
      write_file_atomic(out / "plots.gp", "cd '" + gnuplot_quote(out.string()) + "'\n" + plot_script(term, ext, s));
      r.plot_error = run_gnuplot(gnuplot, out / "plots.gp", out / "gnuplot.log");
      if (!r.plot_error.empty()) continue;
      for (const char* name : {"loss", "accuracy", "learning_rate", "throughput"})
        if (fs::exists(out / (std::string(name) + "." + ext))) r.plots.push_back(out / (std::string(name) + "." + ext));
      break;
    }
  }
  r.markdown = out / "report.md";
  write_file_atomic(r.markdown, markdown(s, r.plots, r.plot_error));
  return r;
}

}  // namespace lockstep::train
