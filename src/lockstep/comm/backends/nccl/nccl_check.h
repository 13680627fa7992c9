// CHECK_CUDA and CHECK_NCCL: a failed CUDA runtime or NCCL call becomes a lockstep exception
// naming the call and the context (operation, sequence number, rank). NCCL's invalid
// argument/usage become InvalidArgument, remote and system errors PeerError (a peer died or
// the network failed), the rest Error. ncclInProgress is not an error (non-blocking mode).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

namespace lockstep::comm::nccl {

[[noreturn]] void throw_cuda_error(cudaError_t rc, const char* call, const std::string& context);
[[noreturn]] void throw_nccl_error(ncclResult_t rc, const char* call, const std::string& context);

}  // namespace lockstep::comm::nccl

#define CHECK_CUDA(call, context)                                                    \
  do {                                                                               \
    cudaError_t lockstep_cuda_rc_ = (call);                                          \
    if (lockstep_cuda_rc_ != cudaSuccess) [[unlikely]]                               \
      ::lockstep::comm::nccl::throw_cuda_error(lockstep_cuda_rc_, #call, (context)); \
  } while (0)

#define CHECK_NCCL(call, context)                                                    \
  do {                                                                               \
    ncclResult_t lockstep_nccl_rc_ = (call);                                         \
    if (lockstep_nccl_rc_ != ncclSuccess && lockstep_nccl_rc_ != ncclInProgress)     \
      [[unlikely]]                                                                   \
      ::lockstep::comm::nccl::throw_nccl_error(lockstep_nccl_rc_, #call, (context)); \
  } while (0)
