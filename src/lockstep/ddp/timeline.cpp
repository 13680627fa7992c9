#include "lockstep/ddp/timeline.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"

namespace lockstep::ddp {

std::unique_ptr<Timeline> Timeline::from_env(int rank, int world) {
  const char* v = std::getenv("LOCKSTEP_TIMELINE");
  if (v == nullptr || *v == '\0') return nullptr;
  return std::make_unique<Timeline>(rank_path(v, rank, world), rank);
}

std::string Timeline::rank_path(const std::string& path, int rank, int world) {
  const auto at = path.find("{rank}");
  if (at != std::string::npos) return path.substr(0, at) + std::to_string(rank) + path.substr(at + 6);
  if (world <= 1) return path;
  const auto dot = path.rfind('.');
  const auto slash = path.rfind('/');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  const std::string tag = ".rank" + std::to_string(rank);
  return has_ext ? path.substr(0, dot) + tag + path.substr(dot) : path + tag;
}

Timeline::Timeline(std::string path, int rank) : path_(std::move(path)), rank_(rank) { events_.reserve(4096); }

Timeline::~Timeline() {
  try {
    write();
  } catch (const std::exception& e) {
    LOCKSTEP_LOG(error, "timeline: could not write ", path_, ": ", e.what());
  }
}

void Timeline::add(std::string name, std::string category, int64_t begin_us, int64_t end_us, int track,
                   int64_t bytes) {
  if (events_.size() >= kMaxEvents) {
    ++dropped_;
    return;
  }
  events_.push_back({std::move(name), std::move(category), begin_us, end_us, track, bytes});
}

namespace {
std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}
}  // namespace

void Timeline::write() const {
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) LOCKSTEP_THROW(DataError, "timeline: cannot open ", tmp, " for writing");
    f << "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"rank\":" << rank_ << ",\"dropped_events\":" << dropped_
      << "},\"traceEvents\":[\n";
    f << "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" << rank_ << ",\"args\":{\"name\":\"rank " << rank_
      << "\"}},\n";
    f << "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" << rank_ << ",\"tid\":1,\"args\":{\"name\":\"comm\"}}";
    for (const Event& e : events_) {
      f << ",\n{\"name\":\"" << json_escape(e.name) << "\",\"cat\":\"" << json_escape(e.category)
        << "\",\"ph\":\"X\",\"pid\":" << rank_ << ",\"tid\":" << e.track << ",\"ts\":" << e.begin_us
        << ",\"dur\":" << (e.end_us - e.begin_us);
      if (e.bytes >= 0) f << ",\"args\":{\"bytes\":" << e.bytes << "}";
      f << "}";
    }
    f << "\n]}\n";
    if (!f.flush()) LOCKSTEP_THROW(DataError, "timeline: writing ", tmp, " failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0)
    LOCKSTEP_THROW(DataError, "timeline: cannot rename ", tmp, " to ", path_);
}

}  // namespace lockstep::ddp
