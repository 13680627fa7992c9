// Timeline: Chrome-trace JSON ("traceEvents", open in chrome://tracing or Perfetto) of a
// rank's training steps — forward, backward, each bucket's all-reduce (on its own track,
// so overlap with backward is visible), finalize and the optimizer step; also, as zero-length
// "ready p<i>" events, when each gradient became final (with its bytes, for train --profile).
//
// Enabled by LOCKSTEP_TIMELINE=path.json. Each rank writes its own file: "{rank}" in the
// path is replaced by the rank, otherwise ranks other than a world of one insert
// ".rank<r>" before the extension (trace.json -> trace.rank1.json). Timestamps are the
// host's monotonic clock in microseconds, so files of one host line up when merged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lockstep/core/clock.h"

namespace lockstep::ddp {

class Timeline {
 public:
  static constexpr int kComputeTrack = 0;
  static constexpr int kCommTrack = 1;
  static constexpr size_t kMaxEvents = 1u << 20;  // memory bound; later events are counted, not kept

  struct Event {
    std::string name;
    std::string category;
    int64_t begin_us = 0, end_us = 0;
    int track = kComputeTrack;
    int64_t bytes = -1;  // a bucket's size (written as args.bytes; lockstep train --profile reads it)
  };

  // Null when LOCKSTEP_TIMELINE is unset or empty.
  static std::unique_ptr<Timeline> from_env(int rank, int world);
  static std::string rank_path(const std::string& path, int rank, int world);

  Timeline(std::string path, int rank);
  ~Timeline();  // writes the file; a failure is logged, never thrown
  Timeline(const Timeline&) = delete;
  Timeline& operator=(const Timeline&) = delete;

  void add(std::string name, std::string category, int64_t begin_us, int64_t end_us, int track = kComputeTrack,
           int64_t bytes = -1);
  // Writes the file now (atomically: temp file + rename). Throws DataError on failure.
  void write() const;
  const std::vector<Event>& events() const { return events_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int rank_;
  std::vector<Event> events_;
  size_t dropped_ = 0;
};

// Records [construction, destruction) as one event when `tl` is not null.
class TimelineScope {
 public:
  TimelineScope(Timeline* tl, const char* name, const char* category)
      : tl_(tl), name_(name), cat_(category), begin_(tl ? now_us() : 0) {}
  ~TimelineScope() {
    if (tl_) tl_->add(name_, cat_, begin_, now_us());
  }
  TimelineScope(const TimelineScope&) = delete;
  TimelineScope& operator=(const TimelineScope&) = delete;

 private:
  Timeline* tl_;
  const char* name_;
  const char* cat_;
  int64_t begin_;
};

}  // namespace lockstep::ddp
