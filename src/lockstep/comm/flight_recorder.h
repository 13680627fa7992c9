// FlightRecorder: always on, cheap. A fixed ring of a process group's last operations (kind,
// sequence number, bytes, start/end times, outcome) written by the thread that runs them.
// Times come from the coarse clock (core/clock.h: the kernel tick, 1-4 ms), which costs a
// small collective 4 ns instead of 25-30: enough to tell which operation hung and for how long.
// On a failure the group prints it and compares notes with the other ranks through the store,
// so the error says which rank never reached which collective.
//
//   FlightRecorder fr(64);
//   auto slot = fr.start(info, bytes);   ... fr.finish(slot, ok);
//   std::string table = fr.dump();       // oldest first, one line per operation
#pragma once

#include <cstddef>
#include <cstdint>
#include <atomic>
#include <string>
#include <vector>

#include "lockstep/comm/types.h"
#include "lockstep/core/clock.h"

namespace lockstep::comm {

class FlightRecorder {
 public:
  enum class State : uint8_t { running, done, failed };

  explicit FlightRecorder(size_t capacity = 64) : ring_(capacity) {}

  // Records that an operation starts; returns its slot for finish(). One writer at a time
  // (the thread running the group's operations); no lock: every field is a relaxed atomic,
  // so a failure path may read the ring while an operation still runs.
  size_t start(const OpInfo& info, bool collective, size_t bytes);
  void finish(size_t slot, bool ok);

  // The last collective started and the last one completed (-1: none yet).
  int64_t last_started() const { return last_started_.load(std::memory_order_acquire); }
  int64_t last_completed() const { return last_completed_.load(std::memory_order_acquire); }
  // The ring, oldest first: "#seq op bytes started -Xms ran Yms done|FAILED|RUNNING".
  std::string dump() const;

 private:
  template <class T>
  using A = std::atomic<T>;
  struct Entry {
    A<OpKind> kind{OpKind::barrier};
    A<bool> collective{true};
    A<uint64_t> seq{0};
    A<size_t> bytes{0};
    A<Clock::rep> start{0}, end{0};  // Clock::time_point::time_since_epoch().count()
    A<State> state{State::running};
  };
  std::vector<Entry> ring_;
  A<size_t> next_{0}, used_{0};
  A<int64_t> last_started_{-1}, last_completed_{-1};
};

}  // namespace lockstep::comm
