#include "lockstep/plan/calibrate.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "lockstep/core/error.h"

namespace lockstep::plan {

nlohmann::json Calibration::to_json() const {
  nlohmann::json j = {{"format", "lockstep-calibration-1"},
                      {"transport", transport},
                      {"world", world},
                      {"alpha_s", link.alpha},
                      {"beta_bytes_per_s", link.beta},
                      {"max_rel_error", max_rel_error}};
  j["samples"] = nlohmann::json::array();
  for (const Sample& s : samples)
    j["samples"].push_back({{"bytes", s.bytes}, {"seconds", s.seconds}});
  return j;
}

namespace {
// A comment line that names a table's columns ("#  size count type redop [root] time ...",
// or "size(B)"): it opens a new table. Other comment lines (the column group line, the
// units line "(B) (elements) ...", the closing "Avg bus bandwidth") are not headers.
// nullopt: not a header; else whether the table has a root column.
std::optional<bool> header_has_root(const std::string& line) {
  std::istringstream words(line.substr(1));
  std::string w;
  if (!(words >> w) || w.rfind("size", 0) != 0) return std::nullopt;
  while (words >> w)
    if (w == "root") return true;
  return false;
}
}  // namespace

// Rows of `bench collectives`: size count type redop [root] then the out-of-place time,
// algbw, busbw, #wrong, then the in-place ones. nccl-tests' layout (since 4e7fe86) has the
// root column, and an all-reduce prints N/A out of place (lockstep's API reduces in place):
// the first time that is a number is taken. Each table's header says whether it has the
// root column (a text may hold several tables, e.g. an older and a newer run).
std::vector<Sample> parse_bench_table(const std::string& text, const std::string& origin) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  bool has_root = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      if (const std::optional<bool> root = header_has_root(line)) has_root = *root;
      continue;
    }
    std::istringstream row(line);
    std::vector<std::string> cols;
    for (std::string c; row >> c;) cols.push_back(c);
    const size_t first = has_root ? 5 : 4;  // the out-of-place time
    double time_us = 0;
    for (size_t k = first; k < cols.size() && k <= first + 4 && !(time_us > 0); k += 4)
      time_us = std::strtod(cols[k].c_str(), nullptr);  // "N/A" reads as 0
    const double size = cols.empty() ? 0 : std::strtod(cols[0].c_str(), nullptr);
    if (size > 0 && time_us > 0) out.push_back({size, time_us * 1e-6});
  }
  if (out.empty())
    LOCKSTEP_THROW(DataError, origin,
                   ": no all-reduce rows (size count type redop [root] time ...) found; give the "
                   "output of `LOCKSTEP_ALGO=ring lockstep bench collectives --op allreduce ...`");
  return out;
}

Calibration fit_ring(const std::vector<Sample>& samples, int world, const std::string& transport) {
  if (world < 2)
    LOCKSTEP_THROW(InvalidArgument, "calibration: the benchmark ran on ", world,
                   " rank(s); it needs 2 or more");
  // Weighted least squares, weights w = 1/t^2: minimise sum w (t - a - b n)^2.
  double sw = 0, sn = 0, st = 0, snn = 0, snt = 0;
  for (const Sample& s : samples) {
    const double w = 1.0 / (s.seconds * s.seconds);
    sw += w, sn += w * s.bytes, st += w * s.seconds, snn += w * s.bytes * s.bytes,
        snt += w * s.bytes * s.seconds;
  }
  const double det = sw * snn - sn * sn;
  const double b = det > 0 ? (sw * snt - sn * st) / det : 0;
  const double a = det > 0 ? (st - b * sn) / sw : 0;
  if (samples.size() < 2 || !(b > 0))
    LOCKSTEP_THROW(DataError, "calibration", transport.empty() ? "" : " of " + transport, ": ",
                   samples.size(), " sizes give no positive bandwidth (slope ", b,
                   " s/B); benchmark more sizes, e.g. "
                   "--min-bytes 4K --max-bytes 64M, on a quieter machine");
  Calibration c;
  c.transport = transport, c.world = world, c.samples = samples;
  const double p = world;
  c.link.alpha = std::max(0.0, a) / (2 * (p - 1));
  c.link.beta = 2 * (p - 1) / (p * b);
  for (const Sample& s : samples)
    c.max_rel_error =
        std::max(c.max_rel_error, std::abs(std::max(0.0, a) + b * s.bytes - s.seconds) / s.seconds);
  return c;
}

Calibration calibration_from_json(const nlohmann::json& j, const std::string& origin) {
  if (j.value("format", "") != "lockstep-calibration-1" || !j.contains("alpha_s") ||
      !j.contains("beta_bytes_per_s"))
    LOCKSTEP_THROW(DataError, origin,
                   ": not a lockstep calibration (format \"lockstep-calibration-1\" with alpha_s "
                   "and beta_bytes_per_s); make one with `lockstep plan calibrate`");
  Calibration c;
  c.transport = j.value("transport", "");
  c.world = j.value("world", 2);
  c.link = {j["alpha_s"].get<double>(), j["beta_bytes_per_s"].get<double>()};
  c.max_rel_error = j.value("max_rel_error", 0.0);
  return c;
}

Calibration load_calibration(const std::filesystem::path& path) {
  std::ifstream f(path);
  if (!f) LOCKSTEP_THROW(DataError, "cannot read the calibration ", path.string());
  try {
    return calibration_from_json(nlohmann::json::parse(f), path.string());
  } catch (const nlohmann::json::exception& e) {
    LOCKSTEP_THROW(DataError, path.string(), ": the calibration is not valid JSON: ", e.what());
  }
}

}  // namespace lockstep::plan
