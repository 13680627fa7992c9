#include "lockstep/comm/flight_recorder.h"

#include <cstdio>

#include "lockstep/core/error.h"

namespace lockstep::comm {

size_t FlightRecorder::start(const OpInfo& info, bool collective, size_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  const size_t slot = next_;
  ring_[slot] = Entry{info.kind, collective, info.seq, bytes, Clock::now(), {}, State::running};
  next_ = (next_ + 1) % ring_.size();
  used_ = std::min(used_ + 1, ring_.size());
  if (collective) last_started_ = int64_t(info.seq);
  return slot;
}

void FlightRecorder::finish(size_t slot, bool ok) {
  std::lock_guard<std::mutex> lk(mu_);
  Entry& e = ring_[slot];
  e.end = Clock::now();
  e.state = ok ? State::done : State::failed;
  if (ok && e.collective) last_completed_ = int64_t(e.seq);
}

int64_t FlightRecorder::last_started() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_started_;
}

int64_t FlightRecorder::last_completed() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_completed_;
}

std::string FlightRecorder::dump() const {
  std::lock_guard<std::mutex> lk(mu_);
  const auto now = Clock::now();
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::string out;
  for (size_t i = 0; i < used_; ++i) {
    const Entry& e = ring_[(next_ + ring_.size() - used_ + i) % ring_.size()];
    char line[160];
    const char* state = e.state == State::done ? "done" : e.state == State::failed ? "FAILED" : "RUNNING";
    const double ran = ms((e.state == State::running ? now : e.end) - e.start);
    std::snprintf(line, sizeof line, "  %s#%llu %-14s %12zu B  started %9.1f ms ago, ran %9.1f ms  %s\n",
                  e.collective ? "" : "p2p ", (unsigned long long)e.seq, std::string(op_kind_name(e.kind)).c_str(), e.bytes,
                  ms(now - e.start), ran, state);
    out += line;
  }
  return out;
}

}  // namespace lockstep::comm
