// What `lockstep plan` prints and writes: the table of a sweep over node counts, its JSON
// rows (for scripts), and an efficiency plot through gnuplot (as `lockstep report` draws).
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "lockstep/plan/predict.h"

namespace lockstep::apps {

struct PlanInputs {
  plan::Profile profile;
  std::string profile_origin;  // the file, or "built-in"
  plan::Topology topo;
  plan::Algo algo = plan::Algo::ring;
  double bucket_cap = 0;
};

void print_plan_table(FILE* out, const PlanInputs& in, const std::vector<plan::Row>& rows);
std::string plan_json(const PlanInputs& in, const std::vector<plan::Row>& rows);
// Writes DIR/plan.dat, DIR/plan.md and DIR/efficiency.png (or .svg). Returns the plot's path,
// or empty with `error` set when gnuplot is missing or failed (the rest is still written).
std::filesystem::path write_plan_files(const std::filesystem::path& dir, const PlanInputs& in,
                                       const std::vector<plan::Row>& rows, std::string& error);

}  // namespace lockstep::apps
