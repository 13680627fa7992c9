#include "lockstep/plan/predict.h"

#include <algorithm>

#include "lockstep/core/error.h"

namespace lockstep::plan {

Prediction predict(const Profile& p, const Topology& t, Algo a, double bucket_cap) {
  Prediction r;
  r.compute = p.compute();
  const Overlap o = simulate_overlap(rebucket(p, bucket_cap), p.backward, t, a);
  r.comm = o.comm;
  r.stats = allreduce_seconds(Algo::lockstep_auto, kTrainerStatsBytes,
                              t);  // the backend picks, not --algo
  r.exposed = o.exposed + r.stats;
  r.step = r.compute + r.exposed;
  r.efficiency = r.step > 0 ? r.compute / r.step : 1.0;
  return r;
}

std::vector<double> bucket_caps() {
  std::vector<double> caps;
  for (double c = 256 << 10; c <= double(256 << 20); c *= 2) caps.push_back(c);
  return caps;
}

std::vector<Row> sweep(const Profile& p, Topology t, Algo a, double bucket_cap,
                       const std::vector<int>& nodes) {
  std::vector<Row> rows;
  for (int n : nodes) {
    t.nodes = n;
    Row r{n, predict(p, t, a, bucket_cap), bucket_cap, {}};
    r.at_best = r.at_cap;
    for (double c : bucket_caps()) {
      const Prediction q = predict(p, t, a, c);
      if (q.step <= r.at_best.step * (1 + 1e-9)) r.best_cap = c, r.at_best = q;
    }
    rows.push_back(r);
  }
  return rows;
}

void check_profile_fits(const Profile& p, const Topology& t, bool own_compute) {
  if (own_compute || p.source == "builtin" || t.per_node <= p.world_size) return;
  LOCKSTEP_THROW(
      InvalidArgument, "the profile of '", p.model, "' measured compute with ", p.world_size,
      " worker(s) sharing one host's cores, but the topology puts ", t.per_node,
      " workers on each node: their compute would be slower than profiled. Record the profile with "
      "`lockstep train --profile FILE --nproc ",
      t.per_node, "`, or pass --own-compute if each worker has cores or an accelerator of its own");
}

void check_profile_model(const Profile& p, const std::string& model, const std::string& origin) {
  if (model.empty() || model == p.model) return;
  LOCKSTEP_THROW(InvalidArgument, origin, " was recorded for model '", p.model, "', not '", model,
                 "': record a profile of '", model, "' with `lockstep train --model ", model,
                 " --profile FILE --nproc 2`, or leave --model out");
}

}  // namespace lockstep::plan
