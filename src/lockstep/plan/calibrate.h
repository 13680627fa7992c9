// Calibration: a link's alpha (seconds per message) and beta (bytes per second) from the
// all-reduce table of `lockstep bench collectives` (nccl-tests columns) run with the ring
// forced (LOCKSTEP_ALGO=ring), whose time is 2(p-1) alpha + 2(p-1)/p n / beta.
//
//   auto samples = parse_bench_table(text, "bench.txt");
//   Calibration c = fit_ring(samples, 2);   // c.link.alpha, c.link.beta
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lockstep/plan/cost_model.h"

namespace lockstep::plan {

struct Sample {
  double bytes = 0, seconds = 0;
};

struct Calibration {
  std::string transport;  // "shm", "tcp", or a name of the caller's choice
  int world = 2;
  Link link;
  double max_rel_error = 0;  // the fit's worst relative error over the samples
  std::vector<Sample> samples;
  nlohmann::json to_json() const;
};

// The rows of an nccl-tests table: size(B) first column, time(us) fifth. DataError naming
// `origin` when no row is found.
std::vector<Sample> parse_bench_table(const std::string& text, const std::string& origin);

// Least squares in relative terms (each sample weighs 1/t^2, so 4 KiB counts as much as
// 64 MiB) of t = a + b n, then alpha = a / (2(p-1)), beta = 2(p-1)/(p b). DataError when the
// fit gives no positive bandwidth (too few sizes, or times that do not grow with size).
Calibration fit_ring(const std::vector<Sample>& samples, int world,
                     const std::string& transport = "");

Calibration calibration_from_json(const nlohmann::json& j, const std::string& origin);
Calibration load_calibration(const std::filesystem::path& path);

}  // namespace lockstep::plan
