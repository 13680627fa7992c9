#include "lockstep/comm/flight_recorder.h"

#include <cstdio>

#include "lockstep/core/error.h"

namespace lockstep::comm {

namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
}

size_t FlightRecorder::start(const OpInfo& info, bool collective, size_t bytes) {
  const size_t slot = next_.load(kRelaxed);
  Entry& e = ring_[slot];
  e.kind.store(info.kind, kRelaxed);
  e.collective.store(collective, kRelaxed);
  e.seq.store(info.seq, kRelaxed);
  e.bytes.store(bytes, kRelaxed);
  e.start.store(coarse_now().time_since_epoch().count(), kRelaxed);
  e.end.store(0, kRelaxed);
  e.state.store(State::running, kRelaxed);
  next_.store((slot + 1) % ring_.size(), kRelaxed);
  used_.store(std::min(used_.load(kRelaxed) + 1, ring_.size()), kRelaxed);
  if (collective) last_started_.store(int64_t(info.seq), std::memory_order_release);
  return slot;
}

void FlightRecorder::finish(size_t slot, bool ok) {
  Entry& e = ring_[slot];
  e.end.store(coarse_now().time_since_epoch().count(), kRelaxed);
  e.state.store(ok ? State::done : State::failed, kRelaxed);
  if (ok && e.collective.load(kRelaxed))
    last_completed_.store(int64_t(e.seq.load(kRelaxed)), std::memory_order_release);
}

std::string FlightRecorder::dump() const {
  const auto now = coarse_now();
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  auto at = [](Clock::rep r) { return Clock::time_point(Clock::duration(r)); };
  const size_t used = used_.load(kRelaxed), next = next_.load(kRelaxed);
  std::string out;
  for (size_t i = 0; i < used; ++i) {
    const Entry& e = ring_[(next + ring_.size() - used + i) % ring_.size()];
    const State st = e.state.load(kRelaxed);
    const auto start = at(e.start.load(kRelaxed));
    char line[160];
    const char* state = st == State::done ? "done" : st == State::failed ? "FAILED" : "RUNNING";
    const double ran = ms((st == State::running ? now : at(e.end.load(kRelaxed))) - start);
    std::snprintf(line, sizeof line, "  %s#%llu %-14s %12zu B  started %9.1f ms ago, ran %9.1f ms  %s\n",
                  e.collective.load(kRelaxed) ? "" : "p2p ", (unsigned long long)e.seq.load(kRelaxed),
                  std::string(op_kind_name(e.kind.load(kRelaxed))).c_str(), e.bytes.load(kRelaxed),
                  ms(now - start), ran, state);
    out += line;
  }
  return out;
}

}  // namespace lockstep::comm
