#include "lockstep/comm/backends/registry.h"

#include <algorithm>
#include <mutex>

#include "lockstep/comm/backends/config.h"
#include "lockstep/comm/backends/factories.h"
#include "lockstep/comm/process_group.h"

namespace lockstep::comm {

void register_builtin_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    // The factories of backends not built are declared but never defined: a discarded
    // `if constexpr` branch does not odr-use them.
    if constexpr (LOCKSTEP_HAVE_MPI) ProcessGroup::register_backend("mpi", make_mpi_group);
    if constexpr (LOCKSTEP_HAVE_GLOO) ProcessGroup::register_backend("gloo", make_gloo_group);
    if constexpr (LOCKSTEP_HAVE_NCCL) ProcessGroup::register_backend("nccl", make_nccl_group);
  });
}

std::vector<std::string> built_backends() {
  std::vector<std::string> names{"native"};
  if constexpr (LOCKSTEP_HAVE_MPI) names.push_back("mpi");
  if constexpr (LOCKSTEP_HAVE_GLOO) names.push_back("gloo");
  if constexpr (LOCKSTEP_HAVE_NCCL) names.push_back("nccl");
  return names;
}

std::string backends_summary() {
  std::string s = "backends:", missing;
  for (const auto& b : built_backends()) s += " " + b;
  const std::pair<const char*, bool> all[] = {
      {"mpi", LOCKSTEP_HAVE_MPI}, {"gloo", LOCKSTEP_HAVE_GLOO}, {"nccl", LOCKSTEP_HAVE_NCCL}};
  for (auto [name, built] : all)
    if (!built) missing += missing.empty() ? name : std::string(" ") + name;
  if (!missing.empty()) s += " (not built: " + missing + ")";
  return s;
}

std::string backend_unavailable_reason(const std::string& backend, int world) {
  const auto built = built_backends();
  if (std::find(built.begin(), built.end(), backend) == built.end())
    return "backend '" + backend + "' is not built in (" + backends_summary() + ")";
  if (backend == "mpi") {
    if constexpr (LOCKSTEP_HAVE_MPI)
      if (world > 1 && !mpi_launched())
        return "the mpi backend runs only under an MPI launcher (mpirun -n N, srun)";
  }
  if (backend == "nccl") {
    if constexpr (LOCKSTEP_HAVE_NCCL) {
      const int n = nccl_visible_devices();
      if (n == 0) return "nccl: cudaGetDeviceCount reports no CUDA device on this machine";
      if (world > n)
        return "nccl: " + std::to_string(world) + " ranks need as many GPUs, this host has " +
               std::to_string(n);
    }
  }
  return "";
}

}  // namespace lockstep::comm
