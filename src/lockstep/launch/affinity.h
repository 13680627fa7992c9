// CPU binding of a node's workers (`lockstep run --cpu-bind`, LOCKSTEP_CPU_BIND). On a host
// with at least as many CPUs as local workers, each worker gets its own slice of the CPUs the
// launcher may use: two ranks' compute threads then never share a core while another sits
// idle, and each rank's communication thread runs on its own rank's core. Measured on the
// 2-vCPU VM of docs/benchmarks.md: fmnist-mlp DDP, 2 workers, median of 5 runs 47.9k -> 57.9k
// samples/s, and the run-to-run spread from 44-57k to 55-60k.
#pragma once

#include <string>
#include <vector>

namespace lockstep::launch {

// "auto" (default): bind when 2 <= nproc <= CPUs available; "none": never; "cores": always
// (round-robin over the CPUs when there are fewer than workers). "" reads LOCKSTEP_CPU_BIND,
// then "auto". Anything else is a ConfigError naming the value and where it came from.
std::string resolve_cpu_bind(const std::string& flag);

// The CPUs each of `nproc` local workers is bound to, in local-rank order; empty = no binding.
// `allowed`: the CPUs this process may run on (sorted). Worker l gets a contiguous slice of
// allowed.size() / nproc CPUs (the first allowed.size() % nproc workers one more), so that a
// worker with LOCKSTEP_NUM_THREADS > 1 has cores for its threads.
std::vector<std::vector<int>> cpu_partition(const std::string& mode, int nproc,
                                            const std::vector<int>& allowed);

// The CPUs this process may run on (sched_getaffinity), sorted.
std::vector<int> allowed_cpus();

// "0-3,8,10-11".
std::string cpu_list(const std::vector<int>& cpus);

}  // namespace lockstep::launch
