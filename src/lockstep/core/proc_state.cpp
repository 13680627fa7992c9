#include "lockstep/core/proc_state.h"

#include <cstdio>
#include <cstring>

namespace lockstep {

char proc_state(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char buf[512] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  // The name in parentheses may hold spaces and ')': the state follows the last ')'.
  const char* close = std::strrchr(buf, ')');
  return close && close + 2 < buf + n ? close[2] : 0;
}

}  // namespace lockstep
