// Step time of a profiled model on a topology: compute as profiled, plus the communication
// that the buckets' all-reduces (one stream, in order, overlapped with backward) leave
// exposed, plus the trainer's per-step all-reduce of its loss and counts (24 bytes).
//
//   Prediction p = predict(profile, topo, Algo::ring, 25 << 20);
//   std::vector<Row> rows = sweep(profile, topo, Algo::ring, 25 << 20, {1, 2, 4, ..., 1024});
#pragma once

#include <vector>

#include "lockstep/plan/cost_model.h"
#include "lockstep/plan/profile.h"

namespace lockstep::plan {

// The trainer's sum over ranks of (loss * samples, samples, correct) after every step.
constexpr double kTrainerStatsBytes = 3 * sizeof(double);

struct Prediction {
  double compute = 0;     // forward + backward + optimizer + other (as profiled)
  double comm = 0;        // all bucket all-reduces, summed
  double exposed = 0;     // communication not hidden behind backward (+ the stats all-reduce)
  double step = 0;        // compute + exposed
  double efficiency = 1;  // weak scaling: compute / step (one worker has no communication)
  double hidden_fraction() const {
    return comm > 0 ? std::clamp(1.0 - (exposed - stats) / comm, 0.0, 1.0) : 1.0;
  }
  double stats = 0;  // the trainer's stats all-reduce (exposed by nature)
};

Prediction predict(const Profile& p, const Topology& t, Algo a, double bucket_cap);

// Candidate bucket caps: 256 KiB to 256 MiB, powers of two.
std::vector<double> bucket_caps();

struct Row {
  int nodes = 1;
  Prediction at_cap;  // at the requested cap
  double best_cap = 0;
  Prediction at_best;  // at the best candidate cap (ties: the larger; fewer messages)
};

std::vector<Row> sweep(const Profile& p, Topology t, Algo a, double bucket_cap,
                       const std::vector<int>& nodes);

// Checks the profile can stand for `t`: its compute was measured with world_size workers
// sharing one host's cores, so more workers per node than that is refused unless
// `own_compute` (each worker has its own cores or accelerator). InvalidArgument saying what
// to do.
void check_profile_fits(const Profile& p, const Topology& t, bool own_compute);
// InvalidArgument when `model` is given and the profile was recorded for another model.
void check_profile_model(const Profile& p, const std::string& model, const std::string& origin);

}  // namespace lockstep::plan
