// The one place where the PyTorch versions lockstep_torch builds against differ in C++: what
// a backend derives from. PyTorch 1.13's init_process_group wants a plugin's creator to
// return a c10d::ProcessGroup; 2.x wants a c10d::Backend (it wraps it in a ProcessGroup
// itself; __init__.py tells it the device, "cpu").
//
// Built and tested against 1.13 only (Debian's). Reviewed, not compiled, against 2.x's
// Backend.hpp and Work.hpp (2026-12-06): the rest is spelled the same in both, so
// process_group.cpp uses it directly:
//  - Work(rank, OpType) (2.x adds optional profiling arguments), the virtuals wait(timeout),
//    getFuture(), isCompleted(), result(), and the protected mutex_, cv_, completed_,
//    exception_, rank_, opType_ and finish(); ::kNoTimeout (global in both), kUnsetTimeout;
//  - Backend's virtuals with ProcessGroup's signatures: broadcast, allreduce,
//    allreduce_coalesced, reduce, allgather, _allgather_base, gather, scatter, reduce_scatter,
//    _reduce_scatter_base, alltoall_base, alltoall, send, recv, barrier, monitoredBarrier,
//    setSequenceNumberForGroup, getSequenceNumberForGroup, getBackendName; rank_, size_, init();
//  - (share_if_agreed, checked against 2.x's Storage.h 2026-12-07) Storage's nbytes(), data()
//    (void* in 1.13, const void* in 2.x: both read), data_ptr() const, set_data_ptr_noswap(),
//    unsafeGetStorageImpl(), getWeakStorageImpl(); Allocator::raw_deleter().
// Not provided for 2.x: allgather_into_tensor_coalesced and reduce_scatter_tensor_coalesced
// (FSDP; Backend's defaults raise "does not support"), getFutureResult (2.6+). In both,
// torch.distributed.monitored_barrier() refuses every backend but gloo (2.x: ValueError);
// the group's own monitored_barrier() method reaches lockstep's.
#pragma once

#include <torch/version.h>

#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace lockstep_torch::compat {

#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

}  // namespace lockstep_torch::compat
