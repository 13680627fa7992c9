#include "lockstep/comm/op_monitor.h"

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"

namespace lockstep::comm {

namespace {
bool debug_from_env() {
  const char* v = std::getenv("LOCKSTEP_DEBUG");
  return v != nullptr && std::string(v) == "detail";
}
}  // namespace

OpMonitor::OpMonitor(store::Store& store, int rank, int world, const Options& options)
    : store_(store),
      rank_(rank),
      world_(world),
      group_(options.group_name),
      prefix_(str_cat("lockstep/pg/", options.group_name, "/")),
      timeout_(options.timeout),
      debug_(options.debug_checks || debug_from_env()) {}

// Every rank publishes "seq -> signature" and compares with every other rank's, so a mismatch
// is reported (with both views) instead of hanging or corrupting data.
void OpMonitor::check_signature(const OpInfo& info, const std::string& signature) {
  auto key = [&](uint64_t seq, int r) { return str_cat(prefix_, "debug/", seq, "/", r); };
  store_.set(key(info.seq, rank_), signature);
  for (int p = 0; p < world_; ++p) {
    if (p == rank_) continue;
    std::string theirs;
    try {
      theirs = store::to_string(store_.get(key(info.seq, p), timeout_));
    } catch (const TimeoutError&) {
      throw PeerError(p, std::string(op_kind_name(info.kind)),
                      str_cat(info.describe(), " [debug]: rank ", p, " never reached collective #",
                              info.seq, " (this rank calls '", signature,
                              "'); it is stalled, dead, or issued fewer "
                              "collectives (or the ranks do not share the group's store)"));
    }
    if (theirs != signature)
      LOCKSTEP_THROW(InvalidArgument, "collective mismatch at #", info.seq, " in group '", group_,
                     "': rank ", rank_, " calls '", signature, "' but rank ", p, " calls '", theirs,
                     "'; every rank must issue the same collectives in the same order");
  }
  // Keys two collectives back are no longer read by anyone: passing #seq-1 needed them all.
  if (info.seq >= 2) store_.delete_key(key(info.seq - 2, rank_));
}

// Every rank that fails posts "last started, last completed" under flight/<rank>; the others
// are read for up to kDiagnosticsBudget (a dead or stopped rank never posts). Best effort,
// with every store call bounded: after a network failure the store may be unreachable too,
// and once a store call has timed out on this failure path it is not tried again.
std::string OpMonitor::explain(const OpInfo& info, const std::function<bool(int)>& exited) {
  if (!first_failure_.empty())
    return str_cat("; this group failed before, in ", first_failure_,
                   " (see that error and the flight recorder printed then)");
  first_failure_ = info.describe();
  std::string table = flight_.dump();
  if (!table.empty() && table.back() == '\n') table.pop_back();  // the log adds its own
  LOCKSTEP_LOG(error, "flight recorder of rank ", rank_, " in group '", group_,
               "' (last operations, oldest first):\n", table);
  if (world_ == 1) return {};
  std::string out = str_cat("; flight recorder: this rank (", rank_,
                            ") last completed collective #", flight_.last_completed());
  if (store_silent_) return out + " (the store did not answer: no reports from the other ranks)";
  try {
    return out + collect_reports(info, exited);
  } catch (const std::exception&) {
    store_silent_ = true;
    return out + " (the store did not answer: no reports from the other ranks)";
  }
}

std::string OpMonitor::collect_reports(const OpInfo& info, const std::function<bool(int)>& exited) {
  const auto until = Clock::now() + kDiagnosticsBudget;
  auto left = [&] {
    return std::max(Millis(50), std::chrono::duration_cast<Millis>(until - Clock::now()));
  };
  // "started completed op": the launcher reads these keys too (its flight-recorder line).
  const std::string mine =
      str_cat(flight_.last_started(), " ", flight_.last_completed(), " ", op_kind_name(info.kind));
  store_.set_within(str_cat(prefix_, "flight/", rank_), store::to_bytes(mine), left());
  std::vector<bool> seen(size_t(world_), false);
  seen[size_t(rank_)] = true;
  std::string reports;
  int waiting = world_ - 1;
  for (int p = 0; exited && p < world_; ++p) {  // a dead process posts nothing: do not wait for it
    if (p == rank_ || !exited(p)) continue;
    seen[size_t(p)] = true;
    --waiting;
    reports += str_cat("; rank ", p, " has exited");
  }
  const bool collective = info.kind != OpKind::send && info.kind != OpKind::recv;
  while (waiting > 0 && Clock::now() < until) {
    for (int p = 0; p < world_; ++p) {
      const std::string key = str_cat(prefix_, "flight/", p);
      if (seen[size_t(p)] || !store_.check_within({key}, left())) continue;
      seen[size_t(p)] = true;
      --waiting;
      long long started = -1, completed = -1;
      std::sscanf(store::to_string(store_.get(key, left())).c_str(), "%lld %lld", &started,
                  &completed);
      reports += str_cat("; rank ", p, " last completed #", completed,
                         started < int64_t(info.seq) && collective
                             ? str_cat(" and never reached #", info.seq)
                             : std::string());
    }
    if (waiting > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string silent;
  for (int p = 0; p < world_; ++p)
    if (!seen[size_t(p)]) silent += str_cat(silent.empty() ? "" : ", ", p);
  if (!silent.empty())
    reports += str_cat("; no report from rank(s) ", silent,
                       " (dead, stopped, or still waiting in another operation)");
  return reports;
}

}  // namespace lockstep::comm
