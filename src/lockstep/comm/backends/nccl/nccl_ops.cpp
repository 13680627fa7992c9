// The collectives of the nccl backend: NCCL calls enqueued on the group's stream (host
// buffers staged through device memory), then polled to completion or to the deadline.
#include <thread>

#include "lockstep/comm/backends/nccl/nccl_check.h"
#include "lockstep/comm/backends/nccl/nccl_process_group.h"
#include "lockstep/core/error.h"

namespace lockstep::comm::nccl {
namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::f16: return ncclFloat16;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8: return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;  // integer types: sum, then integer division
    case ReduceOp::min: return ncclMin;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::prod: return ncclProd;
  }
  return ncclSum;
}

bool is_device_pointer(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// Bytes each side of an operation touches on this rank; in_place: `out` is also the input.
struct Extent {
  size_t in = 0, out = 0;
  bool in_place = false;
};

Extent extent_of(const engine::Op& op, int rank, int world) {
  const size_t b = op.count * dtype_size(op.dtype), all = b * size_t(world);
  switch (op.kind) {
    case OpKind::allreduce:
    case OpKind::broadcast:
    case OpKind::reduce:
    case OpKind::recv: return {0, b, true};
    case OpKind::send: return {b, 0, false};
    case OpKind::allgather: return {b, all, false};
    case OpKind::reduce_scatter: return {all, b, false};
    case OpKind::gather: return {b, rank == op.peer ? all : 0, false};
    case OpKind::scatter: return {rank == op.peer ? all : 0, b, false};
    case OpKind::alltoall: return {all, all, false};
    case OpKind::barrier: return {0, 0, false};
  }
  return {};
}

}  // namespace

void NcclProcessGroup::execute(const engine::Op& op, const OpInfo& info, Deadline deadline) {
  const std::string ctx = info.describe();
  CHECK_CUDA(cudaSetDevice(device_), ctx);
  cudaStream_t s = stream_->get();
  // The caller's stream may still be writing the buffers (DeviceOrder): wait on the device.
  if (op.after_event)
    CHECK_CUDA(cudaStreamWaitEvent(s, static_cast<cudaEvent_t>(op.after_event.get()), 0), ctx);
  const Extent ext = extent_of(op, rank(), size());
  // Host buffers go through pooled device memory; device buffers are used in place.
  const void* in = op.in;
  void* out = op.out;
  bool copy_back = false;
  if (ext.out > 0 && !is_device_pointer(op.out)) {
    out = stage_out_.reserve(ext.out);
    copy_back = true;
    if (ext.in_place) CHECK_CUDA(cudaMemcpyAsync(out, op.out, ext.out, cudaMemcpyHostToDevice, s), ctx);
  }
  if (ext.in_place) in = out;
  if (!ext.in_place && ext.in > 0 && !is_device_pointer(op.in)) {
    void* d = stage_in_.reserve(ext.in);
    CHECK_CUDA(cudaMemcpyAsync(d, op.in, ext.in, cudaMemcpyHostToDevice, s), ctx);
    in = d;
  }
  enqueue(op, in, out, ctx);
  wait_stream(ctx, deadline);
  // Only once the collective is done: a copy into pageable memory blocks the calling thread.
  if (copy_back) {
    CHECK_CUDA(cudaMemcpyAsync(op.out, out, ext.out, cudaMemcpyDeviceToHost, s), ctx);
    wait_stream(ctx, deadline);
  }
}

void NcclProcessGroup::enqueue(const engine::Op& op, const void* in, void* out,
                               const std::string& ctx) {
  ncclComm_t c = comm_->get();
  cudaStream_t s = stream_->get();
  const ncclDataType_t t = nccl_type(op.dtype);
  const size_t n = op.count, b = n * dtype_size(op.dtype);
  const int root = op.peer;
  auto at = [b](const void* p, int r) { return static_cast<const char*>(p) + size_t(r) * b; };
  auto at_mut = [b](void* p, int r) { return static_cast<char*>(p) + size_t(r) * b; };
  switch (op.kind) {
    case OpKind::allreduce: CHECK_NCCL(ncclAllReduce(out, out, n, t, nccl_op(op.op), c, s), ctx); break;
    case OpKind::broadcast: CHECK_NCCL(ncclBroadcast(out, out, n, t, root, c, s), ctx); break;
    case OpKind::reduce: CHECK_NCCL(ncclReduce(out, out, n, t, nccl_op(op.op), root, c, s), ctx); break;
    case OpKind::allgather: CHECK_NCCL(ncclAllGather(in, out, n, t, c, s), ctx); break;
    case OpKind::reduce_scatter:
      CHECK_NCCL(ncclReduceScatter(in, out, n, t, nccl_op(op.op), c, s), ctx);
      break;
    case OpKind::send: CHECK_NCCL(ncclSend(in, n, t, root, c, s), ctx); break;
    case OpKind::recv: CHECK_NCCL(ncclRecv(out, n, t, root, c, s), ctx); break;
    case OpKind::barrier: {
      void* one = stage_in_.reserve(sizeof(float));
      CHECK_NCCL(ncclAllReduce(one, one, 1, ncclFloat32, ncclSum, c, s), ctx);
      break;
    }
    case OpKind::gather:
    case OpKind::scatter:
    case OpKind::alltoall: {
      // Grouped point-to-point: one launch; this rank's own piece is a device copy.
      CHECK_NCCL(ncclGroupStart(), ctx);
      for (int r = 0; r < size(); ++r) {
        const bool self = r == rank();
        if (op.kind == OpKind::alltoall) {
          if (self) {
            CHECK_CUDA(cudaMemcpyAsync(at_mut(out, r), at(in, r), b, cudaMemcpyDeviceToDevice, s), ctx);
          } else {
            CHECK_NCCL(ncclSend(at(in, r), n, t, r, c, s), ctx);
            CHECK_NCCL(ncclRecv(at_mut(out, r), n, t, r, c, s), ctx);
          }
        } else if (rank() == root) {
          if (self && op.kind == OpKind::gather)
            CHECK_CUDA(cudaMemcpyAsync(at_mut(out, r), in, b, cudaMemcpyDeviceToDevice, s), ctx);
          else if (self)
            CHECK_CUDA(cudaMemcpyAsync(out, at(in, r), b, cudaMemcpyDeviceToDevice, s), ctx);
          else if (op.kind == OpKind::gather)
            CHECK_NCCL(ncclRecv(at_mut(out, r), n, t, r, c, s), ctx);
          else
            CHECK_NCCL(ncclSend(at(in, r), n, t, r, c, s), ctx);
        } else if (r == root) {
          if (op.kind == OpKind::gather)
            CHECK_NCCL(ncclSend(in, n, t, root, c, s), ctx);
          else
            CHECK_NCCL(ncclRecv(out, n, t, root, c, s), ctx);
        }
      }
      CHECK_NCCL(ncclGroupEnd(), ctx);
      break;
    }
  }
  wait_accepted(ctx, Deadline::after(options().timeout));
}

void NcclProcessGroup::wait_accepted(const std::string& ctx, Deadline deadline) {
  for (;;) {
    ncclResult_t st = ncclSuccess;
    CHECK_NCCL(ncclCommGetAsyncError(comm_->get(), &st), ctx);
    if (st == ncclSuccess) return;
    if (st != ncclInProgress) {
      comm_->abort();
      throw_nccl_error(st, "ncclCommGetAsyncError", ctx);
    }
    if (aborted()) {
      comm_->abort();
      LOCKSTEP_THROW(AbortedError, ctx, ": aborted");
    }
    if (deadline.expired()) {
      comm_->abort();
      LOCKSTEP_THROW(TimeoutError, ctx, ": NCCL did not accept the call within the timeout");
    }
    std::this_thread::sleep_for(config_.poll_interval);
  }
}

void NcclProcessGroup::wait_stream(const std::string& ctx, Deadline deadline) {
  CHECK_CUDA(cudaEventRecord(done_->get(), stream_->get()), ctx);
  wait_event(done_->get(), ctx, deadline,
             "did not complete within the timeout; a peer may be slow, stopped or calling a "
             "different collective (communicator aborted)");
}

void NcclProcessGroup::wait_event(cudaEvent_t ev, const std::string& ctx, Deadline deadline,
                                  const char* late) {
  for (;;) {
    const cudaError_t q = cudaEventQuery(ev);
    if (q == cudaSuccess) return;
    if (q != cudaErrorNotReady) throw_cuda_error(q, "cudaEventQuery", ctx);
    if (comm_->get()) {  // a one-rank group answered locally has none
      ncclResult_t st = ncclSuccess;
      CHECK_NCCL(ncclCommGetAsyncError(comm_->get(), &st), ctx);
      if (st != ncclSuccess && st != ncclInProgress) {
        comm_->abort();  // a peer failed: NCCL's kernels would otherwise spin forever
        throw_nccl_error(st, "ncclCommGetAsyncError", ctx);
      }
    }
    if (aborted()) {
      comm_->abort();
      LOCKSTEP_THROW(AbortedError, ctx, ": aborted");
    }
    if (deadline.expired()) {
      comm_->abort();
      LOCKSTEP_THROW(TimeoutError, ctx, ": ", late);
    }
    std::this_thread::sleep_for(config_.poll_interval);
  }
}

}  // namespace lockstep::comm::nccl
