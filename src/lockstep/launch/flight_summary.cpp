#include "lockstep/launch/flight_summary.h"

#include <algorithm>
#include <cstdio>

#include "lockstep/core/error.h"

namespace lockstep::launch {
namespace {

// "1, 3, 4"
std::string join_ranks(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) out += str_cat(out.empty() ? "" : ", ", r);
  return out;
}

}  // namespace

std::string flight_key(const std::string& store_prefix, const std::string& group, int rank) {
  // As PrefixStore (LOCKSTEP_STORE_PREFIX) and NativeProcessGroup spell it.
  return str_cat(store_prefix.empty() ? "" : store_prefix + "/", "lockstep/pg/", group, "/flight/", rank);
}

std::optional<FlightReport> parse_flight_report(const std::string& value) {
  FlightReport r;
  long long started = 0, completed = 0;
  char op[32] = {};
  const int n = std::sscanf(value.c_str(), "%lld %lld %31s", &started, &completed, op);
  if (n < 2 || started < -1 || completed < -1) return std::nullopt;
  r.started = started;
  r.completed = completed;
  if (n == 3) r.op = op;
  return r;
}

FlightReports read_flight_reports(store::Store& store, const std::string& store_prefix,
                                  const std::string& group, int world, Millis budget) {
  FlightReports out(size_t(std::max(world, 0)));
  const auto until = Clock::now() + budget;
  auto left = [&] { return std::max(Millis(20), std::chrono::duration_cast<Millis>(until - Clock::now())); };
  try {
    for (int r = 0; r < world && Clock::now() < until; ++r) {
      const std::string key = flight_key(store_prefix, group, r);
      if (!store.check_within({key}, left())) continue;
      out[size_t(r)] = parse_flight_report(store::to_string(store.get(key, left())));
    }
  } catch (const std::exception&) {
    // The store went away or did not answer in time: what was read so far is all there is.
  }
  return out;
}

std::string summarize_flight(const FlightReports& reports, const std::string& group,
                             const std::map<int, std::string>& notes) {
  int64_t seq = -1;
  std::string op;
  for (const auto& r : reports) {
    if (r && r->started > seq) {
      seq = r->started;
      op = r->op;
    }
  }
  if (seq < 0) return {};
  std::vector<int> reached, silent;
  std::map<int64_t, std::vector<int>> behind;  // last completed -> ranks that never started #seq
  for (size_t p = 0; p < reports.size(); ++p) {
    const auto& r = reports[p];
    if (!r) silent.push_back(int(p));
    else if (r->started < seq) behind[r->completed].push_back(int(p));
    else reached.push_back(int(p));
  }
  std::string missing;
  auto add = [&](const std::string& part) { missing += str_cat(missing.empty() ? "" : "; ", part); };
  for (const auto& [completed, ranks] : behind)
    add(str_cat("rank(s) ", join_ranks(ranks), " never reached it (last completed #", completed, ")"));
  if (!silent.empty()) {
    // What the launcher saw of them, when it saw something of each; else the usual suspects.
    std::string why;
    bool all_known = true;
    for (int p : silent) {
      auto n = notes.find(p);
      if (n != notes.end()) why += str_cat(why.empty() ? "" : ", ", "rank ", p, " ", n->second);
      else all_known = false;
    }
    if (!all_known)
      why = str_cat("dead, stopped, or waiting in another operation", why.empty() ? "" : "; " + why);
    add(str_cat("rank(s) ", join_ranks(silent), " missing (no report: ", why, ")"));
  }
  std::string did;
  if (!reached.empty()) {
    // The ranks that reached it all report the same last completed in the usual case.
    int64_t lo = INT64_MAX, hi = -1;
    for (int p : reached) {
      lo = std::min(lo, reports[size_t(p)]->completed);
      hi = std::max(hi, reports[size_t(p)]->completed);
    }
    did = str_cat("rank(s) ", join_ranks(reached), " reached it (last completed #", lo,
                  hi != lo ? str_cat("..#", hi) : std::string(), ")");
  }
  return str_cat("flight recorder: collective #", seq, " (", op.empty() ? "" : op + ", ", "group '", group,
                 "'): ", missing.empty() ? "no rank missing" : missing, "; ", did);
}

}  // namespace lockstep::launch
