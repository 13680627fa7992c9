// The collectives of the mpi backend: each is one non-blocking MPI call, polled to completion
// against the deadline (mpi_runtime.cpp: wait_request).
#include <cstring>

#include "lockstep/comm/backends/mpi/mpi_process_group.h"
#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/core/error.h"

namespace lockstep::comm::mpi {
namespace {

// The MPI type that carries a dtype. f16/bf16 travel as 16-bit words when nothing is
// reduced; reductions widen them to f32 first (see reduction()).
MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::f16:
    case DType::bf16: return MPI_UINT16_T;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::u8: return MPI_UINT8_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;  // avg: divided by the group size afterwards
    case ReduceOp::min: return MPI_MIN;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::prod: return MPI_PROD;
  }
  return MPI_OP_NULL;
}

}  // namespace

void MpiProcessGroup::start_and_wait(int rc, MPI_Request& req, const char* call,
                                     const OpInfo& info, Deadline deadline, size_t bytes) {
  const std::string ctx = info.describe();
  if (rc != MPI_SUCCESS) throw_mpi_error(rc, call, ctx);
  try {
    wait_request(req, call, ctx, deadline, abort_flag(), bytes);
  } catch (const TimeoutError&) {
    orphans_.push_back(req);  // MPI may still write the buffers; the group is broken now
    throw;
  } catch (const AbortedError&) {
    orphans_.push_back(req);
    throw;
  }
}

void MpiProcessGroup::execute(const engine::Op& op, const OpInfo& info, Deadline deadline) {
  engine::check_int_count(op.count * size_t(size()), info);
  switch (op.kind) {
    case OpKind::allreduce:
    case OpKind::reduce:
    case OpKind::reduce_scatter: return reduction(op, info, deadline);
    default: return data_movement(op, info, deadline);
  }
}

// allreduce, reduce, reduce_scatter. For f16/bf16 the data is widened into pooled f32
// buffers, reduced as MPI_FLOAT, divided (avg) and narrowed back.
void MpiProcessGroup::reduction(const engine::Op& op, const OpInfo& info, Deadline deadline) {
  const bool half = is_half(op.dtype);
  const DType wire = half ? DType::f32 : op.dtype;
  const MPI_Datatype type = mpi_type(wire);
  const int n = int(op.count);
  const int root = op.peer;
  const size_t bytes = op.count * dtype_size(wire) * size_t(size());
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Comm c = comm_.get();
  switch (op.kind) {
    case OpKind::allreduce: {
      void* buf = half ? wide_in_.widen(op.out, op.count, op.dtype) : op.out;
      start_and_wait(MPI_Iallreduce(MPI_IN_PLACE, buf, n, type, mpi_op(op.op), c, &req), req,
                     "MPI_Iallreduce", info, deadline, bytes);
      finish_avg(buf, op.count, wire, op.op, size());
      if (half) wide_in_.narrow(op.out, op.count, op.dtype);
      return;
    }
    case OpKind::reduce: {
      void* buf = half ? wide_in_.widen(op.out, op.count, op.dtype) : op.out;
      const bool is_root = rank() == root;
      start_and_wait(MPI_Ireduce(is_root ? MPI_IN_PLACE : buf, is_root ? buf : nullptr, n, type,
                                 mpi_op(op.op), root, c, &req),
                     req, "MPI_Ireduce", info, deadline, bytes);
      if (!is_root) return;
      finish_avg(buf, op.count, wire, op.op, size());
      if (half) wide_in_.narrow(op.out, op.count, op.dtype);
      return;
    }
    case OpKind::reduce_scatter: {
      const void* in = half ? wide_in_.widen(op.in, op.count * size(), op.dtype) : op.in;
      void* out = half ? wide_out_.reserve(op.count) : op.out;
      start_and_wait(MPI_Ireduce_scatter_block(in, out, n, type, mpi_op(op.op), c, &req), req,
                     "MPI_Ireduce_scatter_block", info, deadline, bytes);
      finish_avg(out, op.count, wire, op.op, size());
      if (half) wide_out_.narrow(op.out, op.count, op.dtype);
      return;
    }
    default: LOCKSTEP_CHECK(false, "not a reduction: ", info.describe());
  }
}

void MpiProcessGroup::data_movement(const engine::Op& op, const OpInfo& info, Deadline deadline) {
  const MPI_Datatype t = mpi_type(op.dtype);
  const int n = int(op.count);
  const size_t bytes = op.count * dtype_size(op.dtype) * size_t(size());
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Comm c = comm_.get();
  switch (op.kind) {
    case OpKind::broadcast:
      return start_and_wait(MPI_Ibcast(op.out, n, t, op.peer, c, &req), req, "MPI_Ibcast", info,
                            deadline, bytes);
    case OpKind::allgather:
      return start_and_wait(MPI_Iallgather(op.in, n, t, op.out, n, t, c, &req), req,
                            "MPI_Iallgather", info, deadline, bytes);
    case OpKind::gather:
      return start_and_wait(MPI_Igather(op.in, n, t, op.out, n, t, op.peer, c, &req), req,
                            "MPI_Igather", info, deadline, bytes);
    case OpKind::scatter:
      return start_and_wait(MPI_Iscatter(op.in, n, t, op.out, n, t, op.peer, c, &req), req,
                            "MPI_Iscatter", info, deadline, bytes);
    case OpKind::alltoall:
      return start_and_wait(MPI_Ialltoall(op.in, n, t, op.out, n, t, c, &req), req,
                            "MPI_Ialltoall", info, deadline, bytes);
    case OpKind::barrier:
      return start_and_wait(MPI_Ibarrier(c, &req), req, "MPI_Ibarrier", info, deadline, bytes);
    default: LOCKSTEP_CHECK(false, "unexpected operation: ", info.describe());
  }
}

namespace {

// A posted MPI_Isend/MPI_Irecv; cancelled and freed if dropped before completion.
class MpiPending final : public engine::Pending {
 public:
  MpiPending(MPI_Request req, std::string ctx) : req_(req), ctx_(std::move(ctx)) {}
  ~MpiPending() override {
    if (req_ != MPI_REQUEST_NULL) {
      MPI_Cancel(&req_);
      MPI_Request_free(&req_);
    }
  }
  bool test() override {
    int flag = 0;
    CHECK_MPI(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE), ctx_);
    return flag != 0;
  }

 private:
  MPI_Request req_;
  std::string ctx_;
};

}  // namespace

std::unique_ptr<engine::Pending> MpiProcessGroup::post(const engine::Op& op, const OpInfo& info) {
  engine::check_int_count(op.count, info);
  if (op.tag > uint32_t(tag_ub_))
    LOCKSTEP_THROW(InvalidArgument, info.describe(), ": tag ", op.tag,
                   " exceeds this MPI's MPI_TAG_UB (", tag_ub_, ")");
  const MPI_Datatype t = mpi_type(op.dtype);
  const int n = int(op.count);
  MPI_Request req = MPI_REQUEST_NULL;
  if (op.kind == OpKind::send)
    CHECK_MPI(MPI_Isend(op.in, n, t, op.peer, int(op.tag), comm_.get(), &req), info.describe());
  else
    CHECK_MPI(MPI_Irecv(op.out, n, t, op.peer, int(op.tag), comm_.get(), &req), info.describe());
  return std::make_unique<MpiPending>(req, info.describe());
}

}  // namespace lockstep::comm::mpi
