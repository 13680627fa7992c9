// After a worker failure the launcher names the rank missing from the collective: a process
// group whose collective fails (timeout, dead peer) posts its flight recorder's progress,
// "<last started> <last completed>", under "<store prefix>/lockstep/pg/<group>/flight/<rank>"
// in the job's store (NativeProcessGroup::compare_progress). The launcher reads every rank's
// key and prints one line from them:
//
//   flight recorder: collective #7 (group 'default'): rank(s) 1 missing (no report: rank 1
//   stopped (SIGSTOP or a debugger)); rank(s) 0 reached it (last completed #6)
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lockstep/core/clock.h"
#include "lockstep/store/store.h"

namespace lockstep::launch {

struct FlightReport {
  int64_t started = -1;    // the last collective this rank started (-1: none)
  int64_t completed = -1;  // the last one it completed
  std::string op;          // the operation's name, when the report carries one (a third field)
};
using FlightReports = std::vector<std::optional<FlightReport>>;  // by rank; nullopt: none

// The store key a rank's report lives under (store_prefix may be empty).
std::string flight_key(const std::string& store_prefix, const std::string& group, int rank);

// "<started> <completed> [op]" as posted; nullopt when it does not parse.
std::optional<FlightReport> parse_flight_report(const std::string& value);

// Reads every rank's report; each store call is bounded and all of them together take at
// most `budget`. Best effort: ranks left unread when the store does not answer have none.
FlightReports read_flight_reports(store::Store& store, const std::string& store_prefix,
                                  const std::string& group, int world, Millis budget);

// The summary line ("" when no rank reported, e.g. a worker killed outside any collective).
// The collective is the latest one any reporting rank started; a rank that reports an
// earlier one, or no report at all, is missing from it. `notes` says what the launcher
// knows of a rank without a report ("stopped (SIGSTOP or a debugger)", "exited with code 0").
std::string summarize_flight(const FlightReports& reports, const std::string& group,
                             const std::map<int, std::string>& notes = {});

}  // namespace lockstep::launch
