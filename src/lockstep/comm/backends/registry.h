// The backends on existing engines that this build holds, and the one call that makes them
// available to ProcessGroup::create(). Call register_builtin_backends() once early in main
// (or in a test's setup); it is idempotent and thread-safe. An explicit call, not a static
// initialiser, so that linking lockstep_backends statically never drops a backend.
//
//   lockstep::comm::register_builtin_backends();
//   auto pg = ProcessGroup::create("gloo", store, rank, world);
//   std::cout << "backends:"; for (auto& b : lockstep::comm::built_backends()) std::cout << ' ' << b;
#pragma once

#include <string>
#include <vector>

namespace lockstep::comm {

// Registers every backend built in (mpi, gloo, nccl, per the CMake options) with
// ProcessGroup's registry. Safe to call many times from any thread.
void register_builtin_backends();

// Names of the backends built in, "native" first: e.g. {"native", "mpi", "gloo"}.
std::vector<std::string> built_backends();

// One line for `lockstep --version`: "backends: native mpi gloo (not built: nccl)".
std::string backends_summary();

// Why `backend` cannot run a group of `world` ranks in this process's setting ("" when it
// can): not built; nccl without a GPU, or with fewer devices than ranks on this host; mpi
// with world > 1 outside an MPI launcher. For tests and benchmarks to skip with a reason.
std::string backend_unavailable_reason(const std::string& backend, int world);

}  // namespace lockstep::comm
