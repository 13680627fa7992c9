#pragma once
// Ordering lockstep's collectives after the work LibTorch queued on a GPU, for the DDP adapter
// and the Python c10d backend (python/lockstep_torch). Header-only, through c10's device-guard
// interface: nothing links libc10_cuda, and a CPU-only LibTorch compiles it (it is called for
// CUDA tensors only). The signatures used are the same in LibTorch 1.13 and 2.x.

#include <c10/core/Device.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <memory>

namespace lockstep::torch {

// An event recorded on the current CUDA stream of `device`, destroyed with its last holder:
// what comm::DeviceOrder takes, so that the nccl backend's stream waits for it on the device
// (never a host or device-wide synchronisation).
inline std::shared_ptr<void> record_stream_event(c10::Device device) {
  const c10::impl::VirtualGuardImpl cuda(c10::DeviceType::CUDA);
  void* ev = nullptr;
  cuda.record(&ev, cuda.getStream(device), device.index(), c10::EventFlag::PYTORCH_DEFAULT);
  return std::shared_ptr<void>(ev, [index = device.index()](void* e) {
    c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).destroyEvent(e, index);
  });
}

}  // namespace lockstep::torch
