#include "plan_output.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lockstep/core/error.h"
#include "lockstep/train/file_io.h"
#include "lockstep/train/report.h"

namespace lockstep::apps {
namespace {

namespace fs = std::filesystem;

std::string link_text(const plan::Link& l) {
  char b[96];
  std::snprintf(b, sizeof b, "%.3g Gbit/s, %.3g us", l.beta * 8e-9, l.alpha * 1e6);
  return b;
}

std::string header(const PlanInputs& in) {
  const plan::Profile& p = in.profile;
  std::ostringstream s;
  char b[512];
  std::snprintf(b, sizeof b,
                "# %s (%s): %.1f M params, %.1f MB of gradients; forward %.3f ms, backward %.3f "
                "ms, optimizer %.3f "
                "ms, other %.3f ms per step%s\n",
                p.model.c_str(), in.profile_origin.c_str(), double(p.grad_bytes()) / 4e6,
                p.grad_bytes() / 1e6, p.forward * 1e3, p.backward * 1e3, p.optimizer * 1e3,
                p.other * 1e3,
                p.source == "measured"
                    ? (" (measured with " + std::to_string(p.world_size) + " workers)").c_str()
                    : "");
  s << b;
  s << "# topology: nodes x " << in.topo.per_node << " workers; intra " << link_text(in.topo.intra)
    << "; inter " << link_text(in.topo.inter) << "; algorithm " << plan::algo_name(in.algo)
    << ", bucket cap " << in.bucket_cap / (1 << 20) << " MiB\n";
  return s.str();
}

}  // namespace

void print_plan_table(FILE* out, const PlanInputs& in, const std::vector<plan::Row>& rows) {
  std::fprintf(out, "%s", header(in).c_str());
  std::fprintf(out, "%6s %8s %10s %10s %10s %11s %7s %6s | %9s %10s %6s\n", "nodes", "workers",
               "step(ms)", "compute", "comm", "exposed", "hidden%", "eff%", "best(MiB)", "step(ms)",
               "eff%");
  for (const plan::Row& r : rows) {
    const plan::Prediction& a = r.at_cap;
    std::fprintf(out, "%6d %8d %10.3f %10.3f %10.3f %11.3f %7.1f %6.1f | %9.2f %10.3f %6.1f\n",
                 r.nodes, r.nodes * in.topo.per_node, a.step * 1e3, a.compute * 1e3, a.comm * 1e3,
                 a.exposed * 1e3, 100 * a.hidden_fraction(), 100 * a.efficiency,
                 r.best_cap / (1 << 20), r.at_best.step * 1e3, 100 * r.at_best.efficiency);
  }
}

std::string plan_json(const PlanInputs& in, const std::vector<plan::Row>& rows) {
  nlohmann::json j = {{"model", in.profile.model},
                      {"algorithm", plan::algo_name(in.algo)},
                      {"bucket_cap_bytes", in.bucket_cap},
                      {"per_node", in.topo.per_node}};
  j["rows"] = nlohmann::json::array();
  for (const plan::Row& r : rows)
    j["rows"].push_back({{"nodes", r.nodes},
                         {"workers", r.nodes * in.topo.per_node},
                         {"step_s", r.at_cap.step},
                         {"compute_s", r.at_cap.compute},
                         {"comm_s", r.at_cap.comm},
                         {"exposed_s", r.at_cap.exposed},
                         {"hidden_fraction", r.at_cap.hidden_fraction()},
                         {"efficiency", r.at_cap.efficiency},
                         {"best_cap_bytes", r.best_cap},
                         {"best_step_s", r.at_best.step},
                         {"best_efficiency", r.at_best.efficiency}});
  return j.dump(1);
}

fs::path write_plan_files(const fs::path& dir, const PlanInputs& in,
                          const std::vector<plan::Row>& rows, std::string& error) {
  fs::create_directories(dir);
  std::ostringstream dat;
  dat << "# nodes workers step_ms efficiency best_cap_mib best_step_ms best_efficiency "
         "exposed_ms\n";
  for (const plan::Row& r : rows)
    dat << r.nodes << " " << r.nodes * in.topo.per_node << " " << r.at_cap.step * 1e3 << " "
        << r.at_cap.efficiency << " " << r.best_cap / (1 << 20) << " " << r.at_best.step * 1e3
        << " " << r.at_best.efficiency << " " << r.at_cap.exposed * 1e3 << "\n";
  train::write_file_atomic(dir / "plan.dat", dat.str());
  FILE* md = std::fopen((dir / "plan.md").c_str(), "w");
  if (md == nullptr) LOCKSTEP_THROW(DataError, "cannot write ", (dir / "plan.md").string());
  std::fprintf(md, "```\n");
  print_plan_table(md, in, rows);
  std::fprintf(md, "```\n");
  std::fclose(md);
  const fs::path gnuplot = train::find_program("gnuplot");
  if (gnuplot.empty()) {
    error =
        "gnuplot not found in PATH (Debian: apt-get install gnuplot-nox); plan.dat and plan.md "
        "were written";
    return {};
  }
  for (auto [term, ext] : {std::pair{"pngcairo size 900,540", "png"},
                           {"png size 900,540", "png"},
                           {"svg size 900,540", "svg"}}) {
    std::ostringstream g;
    g << "cd '" << train::gnuplot_quote(dir.string()) << "'\nset terminal " << term
      << "\nset output 'efficiency." << ext
      << "'\nset grid\nset logscale x 2\nset yrange [0:105]\nset key bottom left\n"
      << "set xlabel 'workers'\nset ylabel 'weak-scaling efficiency (%)'\nset title '"
      << train::gnuplot_quote(in.profile.model + ", " + plan::algo_name(in.algo)) << "'\n"
      << "plot 'plan.dat' using 2:($4*100) with linespoints title 'bucket "
      << in.bucket_cap / (1 << 20)
      << " MiB', 'plan.dat' using 2:($7*100) with linespoints title 'best bucket'\n";
    train::write_file_atomic(dir / "plan.gp", g.str());
    error = train::run_gnuplot(gnuplot, dir / "plan.gp", dir / "gnuplot.log");
    if (error.empty()) return dir / (std::string("efficiency.") + ext);
  }
  return {};
}

}  // namespace lockstep::apps
