// The collectives of NativeProcessGroup: the execution of one operation, which the engine
// (engine.h) hands over after its checks, shortcuts and queueing. Each picks the
// shared-memory fast path or an algorithm over the transport.
#include <algorithm>
#include <cstring>

#include "lockstep/comm/algorithms.h"
#include "lockstep/comm/native_process_group.h"
#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

constexpr uint64_t kP2PTagBit = uint64_t(1) << 63;

// Reductions over the transport widen f16/bf16 to f32 around `fn(buffer, dtype)`.
template <class Fn>
void widened(AlignedBuffer& wide, void* data, size_t count, DType dt, Fn&& fn) {
  if (!is_half(dt)) return fn(data, dt);
  wide.reserve(count * sizeof(float));
  auto* f = reinterpret_cast<float*>(wide.data());
  widen_to_f32(data, f, count, dt);
  fn(f, DType::f32);
  narrow_from_f32(f, data, count, dt);
}

}  // namespace

#define LOCKSTEP_CTX algo::Ctx c{*transport_, info, dl, info.seq, scratch_}

void NativeProcessGroup::execute(const engine::Op& op, const OpInfo& info, Deadline dl) {
  const size_t bytes = op.count * dtype_size(op.dtype);
  switch (op.kind) {
    case OpKind::allreduce: return run_allreduce(op, info, dl);
    case OpKind::reduce: return run_reduce(op, info, dl);
    case OpKind::reduce_scatter: return run_reduce_scatter(op, info, dl);
    case OpKind::broadcast: {
      if (shm_) return shm_->broadcast(op.out, bytes, op.peer, info, dl);
      LOCKSTEP_CTX;
      return algo::broadcast_tree(c, op.out, bytes, op.peer);
    }
    case OpKind::allgather: {
      if (shm_) return shm_->allgather(op.in, op.out, bytes, info, dl);
      LOCKSTEP_CTX;
      return algo::allgather_ring(c, op.in, op.out, bytes);
    }
    case OpKind::gather: {
      LOCKSTEP_CTX;
      return algo::gather_linear(c, op.in, op.out, bytes, op.peer);
    }
    case OpKind::scatter: {
      LOCKSTEP_CTX;
      return algo::scatter_linear(c, op.in, op.out, bytes, op.peer);
    }
    case OpKind::alltoall: {
      LOCKSTEP_CTX;
      return algo::alltoall_pairwise(c, op.in, op.out, bytes);
    }
    case OpKind::barrier: {
      if (shm_) return shm_->barrier(info, dl);
      LOCKSTEP_CTX;
      return algo::barrier_dissemination(c);
    }
    case OpKind::send:
      transport_->post_send(op.peer, kP2PTagBit | op.tag, op.in, bytes);
      return transport_->wait_all(dl, info);
    case OpKind::recv:
      transport_->post_recv(op.peer, kP2PTagBit | op.tag, op.out, bytes);
      return transport_->wait_all(dl, info);
  }
}

void NativeProcessGroup::run_allreduce(const engine::Op& op, const OpInfo& info, Deadline dl) {
  FiniteCheck* check = op.check.get();
  if (shm_) {
    bool bad = false;
    shm_->allreduce(op.out, op.count, op.dtype, op.op, info, dl, check ? &bad : nullptr);
    if (check) check->set(bad);
    return;
  }
  widened(wide_, op.out, op.count, op.dtype, [&](void* d, DType t) {
    if (hier_) return allreduce_hierarchical(d, op.count, t, op.op, info);
    LOCKSTEP_CTX;
    pair_plan_.pair_allreduce(op.count * dtype_size(t))(c, d, op.count, t, op.op);
  });
  // On this thread, beside the caller's computation (the ring leaves no pass to fold it in).
  if (check) check->set(has_nonfinite(op.out, op.count, op.dtype));
}

void NativeProcessGroup::run_reduce(const engine::Op& op, const OpInfo& info, Deadline dl) {
  if (shm_) return shm_->reduce(op.out, op.count, op.dtype, op.op, op.peer, info, dl);
  widened(wide_, op.out, op.count, op.dtype, [&](void* d, DType t) {
    LOCKSTEP_CTX;
    algo::reduce_tree(c, d, op.count, t, op.op, op.peer);
  });
}

void NativeProcessGroup::run_reduce_scatter(const engine::Op& op, const OpInfo& info, Deadline dl) {
  if (shm_) return shm_->reduce_scatter(op.in, op.out, op.count, op.dtype, op.op, info, dl);
  LOCKSTEP_CTX;
  if (!is_half(op.dtype)) return algo::reduce_scatter_ring(c, op.in, op.out, op.count, op.dtype, op.op);
  // 16-bit floats: widen the whole input, reduce in f32, round once.
  const size_t total = size_t(size()) * op.count;
  wide_.reserve((total + op.count) * sizeof(float));
  auto* f = reinterpret_cast<float*>(wide_.data());
  widen_to_f32(op.in, f, total, op.dtype);
  algo::reduce_scatter_ring(c, f, f + total, op.count, DType::f32, op.op);
  narrow_from_f32(f + total, op.out, op.count, op.dtype);
}

#undef LOCKSTEP_CTX

// Debug mode: whether the buffer is alloc_shared memory is part of the signature (ranks must
// agree; likewise for the inputs of allgather and reduce_scatter).
std::string NativeProcessGroup::signature_note(const engine::Op& op) const {
  if (!shm_) return {};
  const size_t bytes = op.count * dtype_size(op.dtype);
  bool in_shared = false;
  switch (op.kind) {
    case OpKind::allreduce: in_shared = shm_->in_shared_blocks(op.out, bytes); break;
    case OpKind::allgather: in_shared = shm_->in_shared_blocks(op.in, bytes); break;
    case OpKind::reduce_scatter: in_shared = shm_->in_shared_blocks(op.in, bytes * size_t(size())); break;
    default: break;
  }
  return in_shared ? " in_shared" : "";
}

std::unique_ptr<ProcessGroup> NativeProcessGroup::make_subgroup(const std::vector<int>& ranks,
                                                                const std::string& name, Deadline) {
  auto it = std::find(ranks.begin(), ranks.end(), rank());
  if (it == ranks.end()) return nullptr;
  Options sub = options();
  sub.group_name = name;
  return std::make_unique<NativeProcessGroup>(store_, int(it - ranks.begin()), int(ranks.size()), sub);
}

}  // namespace lockstep::comm
