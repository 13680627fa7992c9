// NcclProcessGroup: the `nccl` backend. One NCCL communicator, one CUDA stream and one event
// per group (RAII), on the device of this rank (LOCKSTEP_NCCL_DEVICE or LOCAL_RANK modulo
// the device count). The unique id is made by rank 0 and exchanged through the store.
//
// The communicator is non-blocking (NCCL's config.blocking = 0): init, every collective and
// abort are polled — cudaEventQuery for completion, ncclCommGetAsyncError for failures —
// against the operation's deadline and the abort flag. A timeout, an async error or abort()
// ends in ncclCommAbort, so a stalled peer never hangs a rank; the group is broken afterwards.
//
// Buffers may be device memory (used in place) or host memory (staged through a pooled
// device buffer, so host-side code and the conformance suite run unchanged). Device buffers
// are read after the issuing thread's DeviceOrder event, if any (cudaStreamWaitEvent on this
// group's stream; process_group.h); without one, the caller synchronises first. f16 and bf16
// are NCCL types; avg is ncclAvg. gather/scatter/alltoall are grouped ncclSend/ncclRecv;
// NCCL point-to-point has no tags, so send/recv match in issue order and `tag` is ignored.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>

#include "lockstep/comm/engine.h"
#include "lockstep/comm/backends/nccl/nccl_options.h"

namespace lockstep::comm::nccl {

class CudaStream {
 public:
  explicit CudaStream(int device);
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent();
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Device memory, grown never shrunk (host buffers are staged through it).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* reserve(size_t bytes);

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

// An NCCL communicator: finalized and destroyed when healthy, aborted when not.
class Communicator {
 public:
  Communicator() = default;
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  ncclComm_t* out() { return &c_; }
  ncclComm_t get() const { return c_; }
  // ncclCommAbort (safe from any thread; idempotent).
  void abort();
  bool aborted() const { return aborted_; }

 private:
  ncclComm_t c_ = nullptr;
  bool aborted_ = false;
};

class NcclProcessGroup final : public engine::EngineGroup {
 public:
  NcclProcessGroup(store::Store& store, int rank, int world, Options options,
                   NcclConfig config = parse_nccl_config());
  // A sub-group split from a parent communicator (make_subgroup).
  NcclProcessGroup(store::Store& store, int device, std::unique_ptr<Communicator> comm,
                   int rank, int world, Options options, NcclConfig config);
  ~NcclProcessGroup() override;

  bool supports(Capability c) const override;
  int cuda_device() const override { return device_; }

 protected:
  void execute(const engine::Op& op, const OpInfo& info, Deadline deadline) override;
  std::unique_ptr<ProcessGroup> make_subgroup(const std::vector<int>& ranks,
                                              const std::string& name,
                                              Deadline deadline) override;
  void copy_local(void* dst, const void* src, size_t bytes) override;

 private:
  // Enqueues the NCCL calls of `op` on the stream, on device pointers.
  void enqueue(const engine::Op& op, const void* in, void* out, const std::string& ctx);
  // Polls the communicator until a non-blocking call has been accepted (not ncclInProgress).
  void wait_accepted(const std::string& ctx, Deadline deadline);
  // Polls the stream's event and the communicator's async error until done; aborts on
  // timeout, error or abort().
  void wait_stream(const std::string& ctx, Deadline deadline);
  // Polls `ev` (and the communicator's async error, where there is one) until it completes;
  // aborts on error, abort() or timeout (a TimeoutError saying `late`).
  void wait_event(cudaEvent_t ev, const std::string& ctx, Deadline deadline, const char* late);
  void init_communicator(const store::Bytes& id, Deadline deadline);

  store::Store& store_;
  NcclConfig config_;
  int device_ = 0;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<CudaStream> stream_;
  std::unique_ptr<CudaEvent> done_;
  DeviceBuffer stage_in_, stage_out_;
};

// Number of CUDA devices, 0 when there is none or no driver (never throws).
int visible_device_count();

}  // namespace lockstep::comm::nccl
