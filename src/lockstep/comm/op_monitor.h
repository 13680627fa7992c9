// OpMonitor: what every engine does around one operation, whatever backend executes it — the
// flight recorder (always on), the debug check that every rank issues the same collective
// (LOCKSTEP_DEBUG=detail or Options::debug_checks) and, after a failure, the comparison of
// progress with the other ranks that names the rank that never arrived. Both go through the
// store the group was created with, under lockstep/pg/<group>/ (the launcher reads the
// flight/<rank> keys too), so the ranks must share it (under mpirun: a TcpStore or a FileStore
// on a shared path, not one store per process).
//
//   OpMonitor m(store, rank, world, options);
//   size_t slot = m.start(info, collective, bytes);
//   if (m.debug_checks() && collective) m.check_signature(info, "allreduce float32 count=10
//   op=sum");
//   ... run it ...; m.finish(slot, ok);           on TimeoutError/PeerError: e.what() +
//   m.explain(info)
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "lockstep/comm/flight_recorder.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/store/store.h"

namespace lockstep::comm {

class OpMonitor {
 public:
  OpMonitor(store::Store& store, int rank, int world, const Options& options);

  bool debug_checks() const { return debug_; }
  std::string prefix() const { return prefix_; }  // "lockstep/pg/<group>/"
  size_t start(const OpInfo& info, bool collective, size_t bytes) {
    return flight_.start(info, collective, bytes);
  }
  void finish(size_t slot, bool ok) { flight_.finish(slot, ok); }

  // Debug mode: publishes this rank's signature of collective #seq and compares it with every
  // other rank's; InvalidArgument naming both on a mismatch, PeerError naming a rank that does
  // not arrive within the group's timeout.
  void check_signature(const OpInfo& info, const std::string& signature);
  // After an operation failed: prints the flight recorder, posts this rank's progress and
  // reads the others' (bounded), and returns "; flight recorder: ..." naming who got how far.
  // Only the group's first failure does this; later ones point back to it. `exited(p)` says
  // whether local rank p is known to be gone (not waited for); may be empty.
  std::string explain(const OpInfo& info, const std::function<bool(int)>& exited = {});
  // A store call on a failure path timed out (network gone): later failures skip the store.
  void store_went_silent() { store_silent_ = true; }
  // What a failure may spend on each store exchange.
  static constexpr std::chrono::seconds kDiagnosticsBudget{2};

 private:
  std::string collect_reports(const OpInfo& info, const std::function<bool(int)>& exited);

  store::Store& store_;
  const int rank_, world_;
  const std::string group_, prefix_;
  const Millis timeout_;
  const bool debug_;
  FlightRecorder flight_{64};
  std::atomic<bool> store_silent_{false};
  std::string first_failure_;  // describe() of the first failed operation
};

}  // namespace lockstep::comm
