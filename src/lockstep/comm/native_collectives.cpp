// The collectives of NativeProcessGroup: argument checks and the world-size-1 shortcut on the
// caller's thread, then a queued body that picks the shared-memory fast path or an algorithm
// over the transport.
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

std::string sig(OpKind k, DType dt, size_t count, const std::string& extra = {}) {
  return str_cat(op_kind_name(k), " ", dtype_name(dt), " count=", count,
                 extra.empty() ? "" : " ", extra);
}
std::string op_s(ReduceOp op) { return str_cat("op=", reduce_op_name(op)); }
std::string root_s(int root) { return str_cat("root=", root); }

void copy(void* out, const void* in, size_t bytes) {
  if (bytes && out != in) std::memmove(out, in, bytes);
}

}  // namespace

#define LOCKSTEP_CTX algo::Ctx c{*transport_, info, dl, info.seq, scratch_}
// The signature string is built only in debug mode (formatting costs more than a small op).
#define LOCKSTEP_SIG(...) (opt_.debug_checks ? sig(__VA_ARGS__) : std::string())

Work NativeProcessGroup::allreduce(void* data, size_t count, DType dt, ReduceOp op) {
  return allreduce_impl(data, count, dt, op, nullptr);
}

Work NativeProcessGroup::allreduce_check_finite(void* data, size_t count, DType dt, ReduceOp op,
                                                std::shared_ptr<FiniteCheck> out) {
  return allreduce_impl(data, count, dt, op, std::move(out));
}

Work NativeProcessGroup::allreduce_impl(void* data, size_t count, DType dt, ReduceOp op,
                                        std::shared_ptr<FiniteCheck> check) {
  if (world_ == 1 || count == 0) {
    if (check) check->set(has_nonfinite(data, count, dt));
    return Work::completed({OpKind::allreduce, 0, rank_, opt_.group_name});
  }
  // Debug mode: whether the buffer is alloc_shared memory is part of the signature (ranks must
  // agree; likewise for the inputs of allgather and reduce_scatter).
  return enqueue(OpKind::allreduce,
                 LOCKSTEP_SIG(OpKind::allreduce, dt, count,
                              op_s(op) + (check ? " check_finite" : "") +
                                  (shm_ && shm_->in_shared_blocks(data, count * dtype_size(dt)) ? " in_shared" : "")),
                 [=, this](const OpInfo& info, Deadline dl) {
    if (shm_) {
      bool bad = false;
      shm_->allreduce(data, count, dt, op, info, dl, check ? &bad : nullptr);
      if (check) check->set(bad);
      return;
    }
    widened(data, count, dt, [&](void* d, DType t) {
      if (hier_) return allreduce_hierarchical(d, count, t, op, info);
      LOCKSTEP_CTX;
      if (algo::choose_allreduce(count * dtype_size(t), world_, opt_.algorithm) ==
          algo::AllreduceAlgo::ring)
        algo::allreduce_ring(c, d, count, t, op);
      else
        algo::allreduce_doubling(c, d, count, t, op);
    });
    // On this thread, beside the caller's computation (the ring leaves no pass to fold it in).
    if (check) check->set(has_nonfinite(data, count, dt));
  }, count * dtype_size(dt));
}

Work NativeProcessGroup::broadcast(void* data, size_t count, DType dt, int root) {
  check_root(root, OpKind::broadcast);
  if (world_ == 1 || count == 0) return Work::completed({OpKind::broadcast, 0, rank_, opt_.group_name});
  return enqueue(OpKind::broadcast, LOCKSTEP_SIG(OpKind::broadcast, dt, count, root_s(root)),
                 [=, this](const OpInfo& info, Deadline dl) {
    const size_t bytes = count * dtype_size(dt);
    if (shm_) return shm_->broadcast(data, bytes, root, info, dl);
    LOCKSTEP_CTX;
    algo::broadcast_tree(c, data, bytes, root);
  }, count * dtype_size(dt));
}

Work NativeProcessGroup::reduce(void* data, size_t count, DType dt, ReduceOp op, int root) {
  check_root(root, OpKind::reduce);
  if (world_ == 1 || count == 0) return Work::completed({OpKind::reduce, 0, rank_, opt_.group_name});
  return enqueue(OpKind::reduce, LOCKSTEP_SIG(OpKind::reduce, dt, count, op_s(op) + " " + root_s(root)),
                 [=, this](const OpInfo& info, Deadline dl) {
    if (shm_) return shm_->reduce(data, count, dt, op, root, info, dl);
    widened(data, count, dt, [&](void* d, DType t) {
      LOCKSTEP_CTX;
      algo::reduce_tree(c, d, count, t, op, root);
    });
  }, count * dtype_size(dt));
}

Work NativeProcessGroup::allgather(const void* in, void* out, size_t count, DType dt) {
  const size_t bytes = count * dtype_size(dt);
  if (world_ == 1 || count == 0) {
    copy(out, in, bytes);
    return Work::completed({OpKind::allgather, 0, rank_, opt_.group_name});
  }
  return enqueue(OpKind::allgather,
                 LOCKSTEP_SIG(OpKind::allgather, dt, count, shm_ && shm_->in_shared_blocks(in, bytes) ? "in_shared" : ""),
                 [=, this](const OpInfo& info, Deadline dl) {
    if (shm_) return shm_->allgather(in, out, bytes, info, dl);
    LOCKSTEP_CTX;
    algo::allgather_ring(c, in, out, bytes);
  }, bytes * world_);
}

Work NativeProcessGroup::reduce_scatter(const void* in, void* out, size_t count, DType dt,
                                        ReduceOp op) {
  if (world_ == 1 || count == 0) {
    copy(out, in, count * dtype_size(dt));
    return Work::completed({OpKind::reduce_scatter, 0, rank_, opt_.group_name});
  }
  return enqueue(OpKind::reduce_scatter,
                 LOCKSTEP_SIG(OpKind::reduce_scatter, dt, count,
                              op_s(op) + (shm_ && shm_->in_shared_blocks(in, count * dtype_size(dt) * world_)
                                              ? " in_shared" : "")),
                 [=, this](const OpInfo& info, Deadline dl) {
    if (shm_) return shm_->reduce_scatter(in, out, count, dt, op, info, dl);
    LOCKSTEP_CTX;
    if (!is_half(dt)) return algo::reduce_scatter_ring(c, in, out, count, dt, op);
    // 16-bit floats: widen the whole input, reduce in f32, round once.
    const size_t total = size_t(world_) * count;
    wide_.reserve((total + count) * sizeof(float));
    auto* f = reinterpret_cast<float*>(wide_.data());
    widen_to_f32(in, f, total, dt);
    algo::reduce_scatter_ring(c, f, f + total, count, DType::f32, op);
    narrow_from_f32(f + total, out, count, dt);
  }, count * dtype_size(dt) * world_);
}

Work NativeProcessGroup::gather(const void* in, void* out, size_t count, DType dt, int root) {
  check_root(root, OpKind::gather);
  const size_t bytes = count * dtype_size(dt);
  if (world_ == 1 || count == 0) {
    copy(out, in, bytes);
    return Work::completed({OpKind::gather, 0, rank_, opt_.group_name});
  }
  return enqueue(OpKind::gather, LOCKSTEP_SIG(OpKind::gather, dt, count, root_s(root)),
                 [=, this](const OpInfo& info, Deadline dl) {
    LOCKSTEP_CTX;
    algo::gather_linear(c, in, out, bytes, root);
  }, bytes);
}

Work NativeProcessGroup::scatter(const void* in, void* out, size_t count, DType dt, int root) {
  check_root(root, OpKind::scatter);
  const size_t bytes = count * dtype_size(dt);
  if (world_ == 1 || count == 0) {
    copy(out, in, bytes);
    return Work::completed({OpKind::scatter, 0, rank_, opt_.group_name});
  }
  return enqueue(OpKind::scatter, LOCKSTEP_SIG(OpKind::scatter, dt, count, root_s(root)),
                 [=, this](const OpInfo& info, Deadline dl) {
    LOCKSTEP_CTX;
    algo::scatter_linear(c, in, out, bytes, root);
  }, bytes);
}

Work NativeProcessGroup::alltoall(const void* in, void* out, size_t count, DType dt) {
  const size_t bytes = count * dtype_size(dt);
  if (world_ == 1 || count == 0) {
    copy(out, in, bytes);
    return Work::completed({OpKind::alltoall, 0, rank_, opt_.group_name});
  }
  return enqueue(OpKind::alltoall, LOCKSTEP_SIG(OpKind::alltoall, dt, count),
                 [=, this](const OpInfo& info, Deadline dl) {
    LOCKSTEP_CTX;
    algo::alltoall_pairwise(c, in, out, bytes);
  }, bytes * world_);
}

Work NativeProcessGroup::barrier() {
  if (world_ == 1) return Work::completed({OpKind::barrier, 0, rank_, opt_.group_name});
  return enqueue(OpKind::barrier, "barrier", [=, this](const OpInfo& info, Deadline dl) {
    if (shm_) return shm_->barrier(info, dl);
    LOCKSTEP_CTX;
    algo::barrier_dissemination(c);
  }, 0);
}

Work NativeProcessGroup::send(const void* data, size_t count, DType dt, int dst, uint32_t tag) {
  check_peer(dst, OpKind::send);
  return enqueue(OpKind::send, {}, [=, this](const OpInfo& info, Deadline dl) {
    transport_->post_send(dst, kP2PTagBit | tag, data, count * dtype_size(dt));
    transport_->wait_all(dl, info);
  }, count * dtype_size(dt));
}

Work NativeProcessGroup::recv(void* data, size_t count, DType dt, int src, uint32_t tag) {
  check_peer(src, OpKind::recv);
  return enqueue(OpKind::recv, {}, [=, this](const OpInfo& info, Deadline dl) {
    transport_->post_recv(src, kP2PTagBit | tag, data, count * dtype_size(dt));
    transport_->wait_all(dl, info);
  }, count * dtype_size(dt));
}

#undef LOCKSTEP_CTX
#undef LOCKSTEP_SIG

std::unique_ptr<ProcessGroup> NativeProcessGroup::new_group(const std::vector<int>& ranks) {
  check_group_ranks(ranks, world_);
  Options sub = opt_;
  sub.group_name = str_cat(opt_.group_name, "/sub", subgroups_++);
  auto it = std::find(ranks.begin(), ranks.end(), rank_);
  if (it == ranks.end()) return nullptr;
  return std::make_unique<NativeProcessGroup>(store_, int(it - ranks.begin()), int(ranks.size()),
                                              sub);
}

}  // namespace lockstep::comm
