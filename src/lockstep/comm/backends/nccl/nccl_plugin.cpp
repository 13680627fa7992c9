// The nccl backend's entry point (plugin.h): liblockstep_backend_nccl.so, or built in.
#include "lockstep/comm/backends/factories.h"
#include "lockstep/comm/backends/plugin.h"

namespace {

std::string nccl_unavailable_reason(int world) {
  const int n = lockstep::comm::nccl_visible_devices();
  if (n == 0) return "nccl: cudaGetDeviceCount reports no CUDA device on this machine";
  if (world > n)
    return "nccl: " + std::to_string(world) + " ranks need as many GPUs, this host has " +
           std::to_string(n);
  return "";
}

}  // namespace

LOCKSTEP_BACKEND_ENTRY(nccl, lockstep::comm::make_nccl_group, nccl_unavailable_reason)
