// Logging: one line per message on stderr, prefixed with rank, time and level:
//   [rank 1 11:06:19.123 W] bucket 3 waited 120 ms
// The rank is left out when LOCKSTEP_OUTPUT_PREFIXED=1 (`lockstep run` sets it when it tags
// every line of a worker with "[rank N] " itself).
// The level comes from LOCKSTEP_LOG_LEVEL (trace, debug, info, warn, error, off; default info).
//
//   LOCKSTEP_LOG(info, "rendezvous done: world=", world, " in ", secs, " s");
#pragma once

#include <string>
#include <string_view>

#include "lockstep/core/error.h"

namespace lockstep {

enum class LogLevel { trace = 0, debug = 1, info = 2, warn = 3, error = 4, off = 5 };

// Current threshold (read from LOCKSTEP_LOG_LEVEL on first use).
LogLevel log_level();
void set_log_level(LogLevel level);
// The rank shown in the prefix; -1 shows none. Defaults to $RANK when set.
void set_log_rank(int rank);
LogLevel parse_log_level(std::string_view name);  // throws ConfigError on unknown names

inline bool log_enabled(LogLevel level) { return level >= log_level(); }
void log_write(LogLevel level, const char* file, int line, const std::string& msg);

}  // namespace lockstep

#define LOCKSTEP_LOG(level, ...)                                                       \
  do {                                                                                 \
    if (::lockstep::log_enabled(::lockstep::LogLevel::level))                          \
      ::lockstep::log_write(::lockstep::LogLevel::level, __FILE__, __LINE__,           \
                            ::lockstep::str_cat(__VA_ARGS__));                         \
  } while (0)
