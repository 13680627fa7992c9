// FlightRecorder: always on, cheap. A fixed ring of a process group's last operations (kind,
// sequence number, bytes, enqueue/start/end times, outcome) written by the thread that runs
// them. On a failure the group prints it and compares notes with the other ranks through the
// store, so the error says which rank never reached which collective.
//
//   FlightRecorder fr(64);
//   auto slot = fr.start(info, bytes);   ... fr.finish(slot, ok);
//   std::string table = fr.dump();       // oldest first, one line per operation
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "lockstep/comm/types.h"
#include "lockstep/core/clock.h"

namespace lockstep::comm {

class FlightRecorder {
 public:
  enum class State : uint8_t { running, done, failed };
  struct Entry {
    OpKind kind = OpKind::barrier;
    bool collective = true;
    uint64_t seq = 0;
    size_t bytes = 0;
    Clock::time_point start, end;
    State state = State::running;
  };

  explicit FlightRecorder(size_t capacity = 64) : ring_(capacity) {}

  // Records that an operation starts; returns its slot for finish().
  size_t start(const OpInfo& info, bool collective, size_t bytes);
  void finish(size_t slot, bool ok);

  // The last collective started and the last one completed (-1: none yet).
  int64_t last_started() const;
  int64_t last_completed() const;
  // The ring, oldest first: "#seq op bytes started -Xms ran Yms done|FAILED|RUNNING".
  std::string dump() const;

 private:
  mutable std::mutex mu_;  // uncontended: one writer, readers only on failure
  std::vector<Entry> ring_;
  size_t next_ = 0, used_ = 0;
  int64_t last_started_ = -1, last_completed_ = -1;
};

}  // namespace lockstep::comm
