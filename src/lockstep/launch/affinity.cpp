#include "lockstep/launch/affinity.h"

#include <sched.h>

#include <cstdlib>

#include "lockstep/core/error.h"

namespace lockstep::launch {

std::string resolve_cpu_bind(const std::string& flag) {
  std::string mode = flag, from = "--cpu-bind";
  if (mode.empty()) {
    const char* env = std::getenv("LOCKSTEP_CPU_BIND");
    mode = env && *env ? env : "auto";
    from = "LOCKSTEP_CPU_BIND";
  }
  if (mode != "auto" && mode != "none" && mode != "cores")
    LOCKSTEP_THROW(ConfigError, from, "='", mode,
                   "': expected auto (bind each local worker to its own cores when ",
                   "there are enough), none or cores");
  return mode;
}

std::vector<std::vector<int>> cpu_partition(const std::string& mode, int nproc,
                                            const std::vector<int>& allowed) {
  LOCKSTEP_CHECK(mode == "auto" || mode == "none" || mode == "cores", "cpu_partition: mode '", mode,
                 "' (resolve_cpu_bind first)");
  const int n = int(allowed.size());
  if (mode == "none" || nproc < 1 || n == 0) return {};
  if (mode == "auto" && (nproc < 2 || nproc > n)) return {};
  std::vector<std::vector<int>> out(static_cast<size_t>(nproc));
  if (nproc > n) {  // cores, oversubscribed: one CPU each, round-robin
    for (int l = 0; l < nproc; ++l) out[size_t(l)] = {allowed[size_t(l % n)]};
    return out;
  }
  int next = 0;
  for (int l = 0; l < nproc; ++l) {
    const int take = n / nproc + (l < n % nproc ? 1 : 0);
    for (int k = 0; k < take; ++k) out[size_t(l)].push_back(allowed[size_t(next++)]);
  }
  return out;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  LOCKSTEP_CHECK_ERRNO(::sched_getaffinity(0, sizeof set, &set),
                       "sched_getaffinity (the CPUs the launcher may use)");
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

std::string cpu_list(const std::vector<int>& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) {
      out += '-';
      out += std::to_string(cpus[j]);
    }
    i = j + 1;
  }
  return out;
}

}  // namespace lockstep::launch
