#include "lockstep/core/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace lockstep {
namespace {

std::atomic<int> g_level{-1};
std::atomic<int> g_rank{-2};  // -2: not yet read from $RANK

int level_from_env() {
  const char* v = std::getenv("LOCKSTEP_LOG_LEVEL");
  if (!v || !*v) return int(LogLevel::info);
  try {
    return int(parse_log_level(v));
  } catch (const ConfigError&) {
    std::fprintf(stderr, "lockstep: ignoring LOCKSTEP_LOG_LEVEL='%s' (use trace, debug, info, "
                 "warn, error or off)\n", v);
    return int(LogLevel::info);
  }
}

int rank_from_env() {
  const char* v = std::getenv("RANK");
  if (!v || !*v) return -1;
  char* end = nullptr;
  long r = std::strtol(v, &end, 10);
  return (end && *end == 0 && r >= 0) ? int(r) : -1;
}

}  // namespace

LogLevel parse_log_level(std::string_view n) {
  if (n == "trace") return LogLevel::trace;
  if (n == "debug") return LogLevel::debug;
  if (n == "info") return LogLevel::info;
  if (n == "warn" || n == "warning") return LogLevel::warn;
  if (n == "error") return LogLevel::error;
  if (n == "off" || n == "none") return LogLevel::off;
  LOCKSTEP_THROW(ConfigError, "unknown log level '", n,
                 "' (LOCKSTEP_LOG_LEVEL takes trace, debug, info, warn, error or off)");
}

LogLevel log_level() {
  int l = g_level.load(std::memory_order_relaxed);
  if (l < 0) {
    l = level_from_env();
    g_level.store(l, std::memory_order_relaxed);
  }
  return LogLevel(l);
}

void set_log_level(LogLevel level) { g_level.store(int(level)); }
void set_log_rank(int rank) { g_rank.store(rank); }

void log_write(LogLevel level, const char* file, int line, const std::string& msg) {
  static constexpr char kLetters[] = "TDIWE";
  int rank = g_rank.load(std::memory_order_relaxed);
  if (rank == -2) {
    rank = rank_from_env();
    g_rank.store(rank);
  }
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  int ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch())
                   .count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  // Under `lockstep run` the launcher tags each worker's lines with its rank already.
  static const bool tagged = [] {
    const char* v = std::getenv("LOCKSTEP_OUTPUT_PREFIXED");
    return v && std::string_view(v) == "1";
  }();
  char prefix[64];
  if (rank >= 0 && !tagged) {
    std::snprintf(prefix, sizeof prefix, "[rank %d %02d:%02d:%02d.%03d %c] ", rank, tm.tm_hour,
                  tm.tm_min, tm.tm_sec, ms, kLetters[int(level)]);
  } else {
    std::snprintf(prefix, sizeof prefix, "[%02d:%02d:%02d.%03d %c] ", tm.tm_hour, tm.tm_min,
                  tm.tm_sec, ms, kLetters[int(level)]);
  }
  std::string out = prefix + msg + "\n";
  // One write() per line keeps lines from different threads and ranks whole.
  ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
  (void)ignored;
  (void)file;
  (void)line;
}

}  // namespace lockstep
