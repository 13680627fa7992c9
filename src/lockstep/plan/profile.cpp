#include "lockstep/plan/profile.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

#include "lockstep/core/error.h"

namespace lockstep::plan {
namespace {

using nlohmann::json;

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

template <class T>
T get(const json& j, const char* key, const std::string& origin) {
  if (!j.contains(key)) LOCKSTEP_THROW(DataError, origin, ": profile key '", key, "' is missing");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    LOCKSTEP_THROW(DataError, origin, ": profile key '", key, "' has the wrong type (", e.what(),
                   ")");
  }
}

// One rank's trace events by name: compute scopes and bucket all-reduces (begin, end in us).
struct Ev {
  std::string name;
  double ts = 0, dur = 0, bytes = -1;
};

std::vector<Ev> read_trace(const std::filesystem::path& path) {
  std::ifstream f(path);
  if (!f)
    LOCKSTEP_THROW(DataError, "profile: cannot read the trace ", path.string(),
                   " (did every rank finish?)");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    LOCKSTEP_THROW(DataError, "profile: ", path.string(), " is not a Chrome trace: ", e.what());
  }
  std::vector<Ev> out;
  for (const json& e : j.value("traceEvents", json::array())) {
    if (e.value("ph", "") != "X") continue;
    Ev ev{e.value("name", ""), e.value("ts", 0.0), e.value("dur", 0.0), -1};
    if (e.contains("args")) ev.bytes = e["args"].value("bytes", -1.0);
    out.push_back(std::move(ev));
  }
  std::stable_sort(out.begin(), out.end(), [](const Ev& a, const Ev& b) { return a.ts < b.ts; });
  return out;
}

struct RankSteps {
  std::vector<StepSample> steps;
  std::vector<double> bytes;       // per bucket, from the last step
  std::vector<double> grad_bytes;  // per parameter
};

// Per parameter: bytes and the median ready time over `steps`, sorted by that time.
std::vector<Bucket> grad_ready(const std::vector<StepSample>& steps,
                               const std::vector<double>& bytes) {
  std::vector<std::vector<double>> t(bytes.size());
  for (const StepSample& s : steps)
    for (auto [i, at] : s.grads)
      if (i < t.size()) t[i].push_back(std::min(at, s.backward));
  std::vector<Bucket> g;
  for (size_t i = 0; i < t.size(); ++i)
    if (!t[i].empty() && bytes[i] > 0) g.push_back({bytes[i], median(t[i])});
  std::stable_sort(g.begin(), g.end(),
                   [](const Bucket& a, const Bucket& b) { return a.ready < b.ready; });
  return g;
}

// Per step, the sample of the rank that computed longest (step - finalize: forward, backward,
// optimizer and the rest; the one whose finalize waited least). The ranks' gradients meet in
// each bucket's all-reduce, so every step waits for its slowest rank: with several workers
// sharing cores, medians over all ranks' samples would leave out those stragglers.
// `ranks` is not empty (profile_from_traces refuses an empty trace list).
std::vector<StepSample> critical_steps(const std::vector<std::vector<StepSample>>& ranks) {
  size_t n = ranks.front().size();
  for (const auto& r : ranks) n = std::min(n, r.size());
  std::vector<StepSample> out;
  for (size_t k = 0; k < n; ++k) {
    const StepSample* slow = &ranks.front()[k];
    for (const auto& r : ranks)
      if (r[k].step - r[k].finalize > slow->step - slow->finalize) slow = &r[k];
    out.push_back(*slow);
  }
  return out;
}

// Splits one rank's events into steps at each "forward".
RankSteps split_steps(const std::vector<Ev>& evs) {
  RankSteps r;
  double fwd_begin = -1, bwd_begin = 0;
  for (const Ev& e : evs) {
    if (e.name == "forward") {
      if (!r.steps.empty() && fwd_begin >= 0) r.steps.back().step = (e.ts - fwd_begin) * 1e-6;
      r.steps.emplace_back();
      r.steps.back().forward = e.dur * 1e-6;
      fwd_begin = e.ts;
      continue;
    }
    if (r.steps.empty()) continue;
    StepSample& s = r.steps.back();
    if (e.name == "backward") s.backward = e.dur * 1e-6, bwd_begin = e.ts;
    if (e.name == "finalize") s.finalize = e.dur * 1e-6;
    if (e.name == "optimizer") s.optimizer = e.dur * 1e-6;
    if (e.name.rfind("ready p", 0) == 0) {
      const size_t i = std::stoul(e.name.substr(7));
      s.grads.emplace_back(i, (e.ts - bwd_begin) * 1e-6);
      if (r.grad_bytes.size() <= i) r.grad_bytes.resize(i + 1, 0);
      r.grad_bytes[i] = e.bytes;
    }
    if (e.name.rfind("allreduce b", 0) == 0) {
      const size_t b = std::stoul(e.name.substr(11));
      if (s.ready.size() <= b) s.ready.resize(b + 1, 0);
      s.ready[b] = (e.ts - bwd_begin) * 1e-6;
      if (r.bytes.size() <= b) r.bytes.resize(b + 1, -1);
      r.bytes[b] = e.bytes;
    }
  }
  return r;
}

}  // namespace

double Profile::grad_bytes() const {
  double s = 0;
  for (const Bucket& b : buckets) s += b.bytes;
  return s;
}

json Profile::to_json() const {
  json j = {{"format", "lockstep-profile-1"},
            {"model", model},
            {"source", source},
            {"world_size", world_size},
            {"transport", transport},
            {"batch", batch},
            {"params", params},
            {"bucket_cap_bytes", bucket_cap_bytes},
            {"first_bucket_bytes", first_bucket_bytes},
            {"forward_s", forward},
            {"backward_s", backward},
            {"finalize_s", finalize},
            {"optimizer_s", optimizer},
            {"step_s", step},
            {"other_s", other}};
  j["buckets"] = json::array();
  for (const Bucket& b : buckets)
    j["buckets"].push_back({{"bytes", b.bytes}, {"ready_s", b.ready}});
  j["grads"] = json::array();
  for (const Bucket& g : grads) j["grads"].push_back({{"bytes", g.bytes}, {"ready_s", g.ready}});
  j["steps"] = json::array();
  for (const StepSample& s : steps)
    j["steps"].push_back({{"forward_s", s.forward},
                          {"backward_s", s.backward},
                          {"finalize_s", s.finalize},
                          {"optimizer_s", s.optimizer},
                          {"step_s", s.step},
                          {"ready_s", s.ready}});
  return j;
}

Profile profile_from_json(const json& j, const std::string& origin) {
  if (j.value("format", "") != "lockstep-profile-1")
    LOCKSTEP_THROW(DataError, origin,
                   ": not a lockstep profile (format is not \"lockstep-profile-1\"); "
                   "record one with `lockstep train --profile FILE`");
  Profile p;
  p.model = get<std::string>(j, "model", origin);
  p.source = j.value("source", "measured");
  p.world_size = get<int>(j, "world_size", origin);
  p.transport = j.value("transport", "");
  p.batch = j.value("batch", int64_t(0));
  p.params = j.value("params", int64_t(0));
  p.bucket_cap_bytes = get<double>(j, "bucket_cap_bytes", origin);
  p.first_bucket_bytes = j.value("first_bucket_bytes", p.bucket_cap_bytes);
  p.forward = get<double>(j, "forward_s", origin);
  p.backward = get<double>(j, "backward_s", origin);
  p.finalize = j.value("finalize_s", 0.0);
  p.optimizer = get<double>(j, "optimizer_s", origin);
  p.step = j.value("step_s", 0.0);
  p.other = j.value("other_s", 0.0);
  for (const json& b : get<json>(j, "buckets", origin))
    p.buckets.push_back({get<double>(b, "bytes", origin), get<double>(b, "ready_s", origin)});
  for (const json& g : j.value("grads", json::array()))
    p.grads.push_back({get<double>(g, "bytes", origin), get<double>(g, "ready_s", origin)});
  if (p.world_size < 1 || p.buckets.empty() || p.backward <= 0 || p.bucket_cap_bytes <= 0)
    LOCKSTEP_THROW(
        DataError, origin, ": profile of '", p.model, "' has world_size ", p.world_size, ", ",
        p.buckets.size(), " buckets, backward_s ", p.backward, ", bucket_cap_bytes ",
        p.bucket_cap_bytes,
        "; all must be positive (record it again with `lockstep train --profile FILE --nproc 2`)");
  return p;
}

Profile load_profile(const std::filesystem::path& path) {
  std::ifstream f(path);
  if (!f)
    LOCKSTEP_THROW(DataError, "cannot read the profile ", path.string(),
                   " (record one with `lockstep train --profile FILE`)");
  try {
    return profile_from_json(json::parse(f), path.string());
  } catch (const json::exception& e) {
    LOCKSTEP_THROW(DataError, path.string(), ": the profile is not valid JSON: ", e.what());
  }
}

void save_profile(const Profile& p, const std::filesystem::path& path) {
  std::ofstream f(path, std::ios::trunc);
  f << p.to_json().dump(1) << "\n";
  if (!f.flush())
    LOCKSTEP_THROW(DataError, "cannot write the profile ", path.string(),
                   " (directory missing or disk full?)");
}

Profile profile_from_traces(const std::vector<std::filesystem::path>& traces, Profile p, int skip) {
  if (traces.empty())
    LOCKSTEP_THROW(DataError,
                   "profile: no traces given; pass one Chrome trace per rank (`lockstep train "
                   "--profile FILE --nproc 2` writes FILE.rank<r>.trace.json for each rank)");
  p.source = "measured";
  std::vector<std::vector<StepSample>> ranks;
  std::vector<double> bytes, grad_bytes;
  for (size_t r = 0; r < traces.size(); ++r) {
    RankSteps rs = split_steps(read_trace(traces[r]));
    if (int(rs.steps.size()) <= skip + 1)
      LOCKSTEP_THROW(DataError, "profile: ", traces[r].string(), " holds ", rs.steps.size(),
                     " steps; at least ", skip + 2, " are needed (raise --max-steps)");
    ranks.emplace_back(rs.steps.begin() + skip, rs.steps.end() - 1);
    if (r == 0) bytes = rs.bytes, grad_bytes = rs.grad_bytes;  // every rank has the same buckets
  }
  p.steps = critical_steps(ranks);  // the samples the medians below are taken over
  const std::vector<StepSample>& all = p.steps;
  if (bytes.empty() || std::any_of(bytes.begin(), bytes.end(), [](double b) { return b <= 0; }))
    LOCKSTEP_THROW(
        DataError,
        "profile: the traces name no bucket all-reduces with their sizes (a world of one "
        "reduces nothing: profile with --nproc 2 or more)");
  auto med = [&](auto field) {
    std::vector<double> v;
    for (const StepSample& s : all) v.push_back(s.*field);
    return median(v);
  };
  p.forward = med(&StepSample::forward), p.backward = med(&StepSample::backward);
  p.finalize = med(&StepSample::finalize), p.optimizer = med(&StepSample::optimizer);
  p.step = med(&StepSample::step);
  std::vector<double> other;
  for (const StepSample& s : all)
    other.push_back(s.step - s.forward - s.backward - s.finalize - s.optimizer);
  p.other = std::max(0.0, median(other));
  p.buckets.clear();
  for (size_t b = 0; b < bytes.size(); ++b) {
    std::vector<double> ready;
    for (const StepSample& s : all)
      if (b < s.ready.size()) ready.push_back(std::min(s.ready[b], s.backward));
    p.buckets.push_back({bytes[b], median(ready)});
  }
  p.grads = grad_ready(all, grad_bytes);
  return p;
}

namespace {
struct Builtin {
  const char* name;
  double params, tokens;  // tokens per worker per step
};
constexpr Builtin kBuiltins[] = {
    {"gpt-25m", 25e6, 16384}, {"gpt-350m", 350e6, 8192}, {"gpt-1.3b", 1.3e9, 4096}};
}  // namespace

std::vector<std::string> builtin_models() {
  std::vector<std::string> v;
  for (const Builtin& b : kBuiltins) v.push_back(b.name);
  return v;
}

Profile builtin_profile(const std::string& name, double compute_s, double flops,
                        double grad_bytes_per_param, double cap) {
  const Builtin* m = nullptr;
  for (const Builtin& b : kBuiltins)
    if (name == b.name) m = &b;
  if (m == nullptr)
    LOCKSTEP_THROW(
        InvalidArgument, "unknown built-in model '", name,
        "': use gpt-25m, gpt-350m or gpt-1.3b, or a profile from `lockstep train --profile FILE`");
  Profile p;
  p.model = name, p.source = "builtin", p.params = int64_t(m->params);
  if (compute_s <= 0) compute_s = 6.0 * m->params * m->tokens / flops;
  p.forward = compute_s / 3, p.backward = compute_s * 2 / 3, p.step = compute_s;
  p.bucket_cap_bytes = cap, p.first_bucket_bytes = std::min(cap, double(1 << 20));
  // One bucket holding everything, ready at backward end, is the curve "evenly through
  // backward" once rebucket() cuts it with a start at backward start.
  const double total = m->params * grad_bytes_per_param;
  p.buckets = {{total * 1e-9, 0.0}, {total * (1 - 1e-9), p.backward}};
  p.buckets = rebucket(p, cap);
  return p;
}

namespace {
// DDP's plan_buckets (ddp/bucket.cpp) over gradients in ready order: the first bucket closes
// before a gradient that would overflow it; any bucket closes once it reaches its cap.
std::vector<Bucket> bucket_grads(const std::vector<Bucket>& grads, double first, double cap) {
  std::vector<Bucket> out;
  bool open = false;
  for (const Bucket& g : grads) {
    if (out.size() == 1 && open && out[0].bytes > 0 && out[0].bytes + g.bytes > first) open = false;
    if (!open) out.push_back({0, 0}), open = true;
    out.back().bytes += g.bytes;
    out.back().ready = std::max(out.back().ready, g.ready);
    if (out.back().bytes >= (out.size() == 1 ? first : cap)) open = false;
  }
  return out;
}
}  // namespace

std::vector<Bucket> rebucket(const Profile& p, double cap) {
  if (cap == p.bucket_cap_bytes && p.source != "builtin") return p.buckets;
  if (!p.grads.empty()) return bucket_grads(p.grads, std::min(cap, p.first_bucket_bytes), cap);
  // Cumulative curve: (time, bytes ready by then), from (0, 0) through each recorded bucket.
  std::vector<std::pair<double, double>> curve{{0.0, 0.0}};
  double cum = 0;
  for (const Bucket& b : p.buckets)
    curve.push_back({std::max(b.ready, curve.back().first), cum += b.bytes});
  auto time_at = [&](double bytes) {
    for (size_t i = 1; i < curve.size(); ++i) {
      if (curve[i].second < bytes && i + 1 < curve.size()) continue;
      const auto [t0, b0] = curve[i - 1];
      const auto [t1, b1] = curve[i];
      return b1 > b0 ? t0 + (t1 - t0) * std::clamp((bytes - b0) / (b1 - b0), 0.0, 1.0) : t1;
    }
    return curve.back().first;
  };
  std::vector<Bucket> out;
  double at = 0;
  while (at < cum) {
    const double size = std::min(out.empty() ? std::min(cap, p.first_bucket_bytes) : cap, cum - at);
    at += size;
    out.push_back({size, time_at(at)});
  }
  return out;
}

}  // namespace lockstep::plan
