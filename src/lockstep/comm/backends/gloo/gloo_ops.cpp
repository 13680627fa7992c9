// The collectives of the gloo backend: gloo's options-style algorithms, one call each, with
// lockstep's reduce kernels as the element-wise reduction.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/gather.h>
#include <gloo/reduce.h>
#include <gloo/scatter.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <string_view>

#include "lockstep/comm/backends/gloo/gloo_errors.h"
#include "lockstep/comm/backends/gloo/gloo_process_group.h"
#include "lockstep/comm/reduce_kernels.h"

namespace lockstep::comm::gloo_backend {
namespace {

// Calls fn(T{}) with the C++ type gloo should see for a dtype (16-bit floats as raw words:
// they are only moved, never reduced, in this type).
template <class Fn>
void with_element_type(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    case DType::f16:
    case DType::bf16: return fn(uint16_t{});
    case DType::i32: return fn(int32_t{});
    case DType::i64: return fn(int64_t{});
    case DType::u8: return fn(uint8_t{});
  }
}

// gloo's reduction callback: out = a op b, where out may alias a or b.
::gloo::AllreduceOptions::Func reduce_fn(DType dtype, ReduceOp op) {
  return [dtype, op](void* out, const void* a, const void* b, size_t n) {
    if (out == b) std::swap(a, b);
    if (out != a) std::memcpy(out, a, n * dtype_size(dtype));
    reduce_into(out, b, n, dtype, op);  // avg sums here; finish_avg divides at the end
  };
}

Millis time_left(Deadline dl) {
  auto ms = std::chrono::duration_cast<Millis>(dl.remaining());
  return ms.count() > 0 ? ms : Millis(1);
}

}  // namespace

void GlooProcessGroup::execute(const engine::Op& op, const OpInfo& info, Deadline deadline) {
  guard_gloo(info.describe(), [&] {
    switch (op.kind) {
      case OpKind::allreduce:
      case OpKind::reduce:
      case OpKind::reduce_scatter: return reduction(op, info, deadline);
      default: return data_movement(op, info, deadline);
    }
  });
}

void GlooProcessGroup::gloo_reduce(OpKind kind, void* data, size_t count, DType dtype,
                                   ReduceOp op, int root, uint32_t tag, Millis timeout) {
  with_element_type(dtype, [&](auto zero) {
    using T = decltype(zero);
    T* p = static_cast<T*>(data);
    if (kind == OpKind::allreduce) {
      ::gloo::AllreduceOptions o(context_);
      o.setOutput<T>(p, count);
      o.setReduceFunction(reduce_fn(dtype, op));
      o.setTag(tag);
      o.setTimeout(timeout);
      ::gloo::allreduce(o);
    } else {
      ::gloo::ReduceOptions o(context_);
      o.setOutput<T>(p, count);
      o.setRoot(root);
      o.setReduceFunction(reduce_fn(dtype, op));
      o.setTag(tag);
      o.setTimeout(timeout);
      ::gloo::reduce(o);
    }
  });
}

// allreduce and reduce in place (f16/bf16 widened to f32 around the call); reduce_scatter as
// an all-reduce of a staged copy of the whole input, keeping this rank's slice.
void GlooProcessGroup::reduction(const engine::Op& op, const OpInfo& info, Deadline deadline) {
  const bool half = is_half(op.dtype);
  const DType wire = half ? DType::f32 : op.dtype;
  const uint32_t tag = uint32_t(info.seq);
  if (op.kind != OpKind::reduce_scatter) {
    void* buf = half ? wide_.widen(op.out, op.count, op.dtype) : op.out;
    gloo_reduce(op.kind, buf, op.count, wire, op.op, op.peer, tag, time_left(deadline));
    if (op.kind == OpKind::reduce && rank() != op.peer) return;
    finish_avg(buf, op.count, wire, op.op, size());
    if (half) wide_.narrow(op.out, op.count, op.dtype);
    return;
  }
  const size_t total = op.count * size_t(size());
  void* buf;
  if (half) {
    buf = wide_.widen(op.in, total, op.dtype);
  } else {
    const size_t bytes = total * dtype_size(op.dtype);
    if (bytes > stage_cap_) {
      stage_.reset(new uint8_t[bytes]);
      stage_cap_ = bytes;
    }
    std::memcpy(stage_.get(), op.in, bytes);
    buf = stage_.get();
  }
  gloo_reduce(OpKind::allreduce, buf, total, wire, op.op, -1, tag, time_left(deadline));
  uint8_t* slice = static_cast<uint8_t*>(buf) + size_t(rank()) * op.count * dtype_size(wire);
  finish_avg(slice, op.count, wire, op.op, size());
  if (half)
    narrow_from_f32(reinterpret_cast<const float*>(slice), op.out, op.count, op.dtype);
  else
    std::memcpy(op.out, slice, op.count * dtype_size(wire));
}

void GlooProcessGroup::data_movement(const engine::Op& op, const OpInfo& info, Deadline deadline) {
  const uint32_t tag = uint32_t(info.seq);
  const Millis timeout = time_left(deadline);
  const size_t n = op.count, world = size_t(size());
  const bool is_root = rank() == op.peer;
  with_element_type(op.dtype, [&](auto zero) {
    using T = decltype(zero);
    T* in = const_cast<T*>(static_cast<const T*>(op.in));
    T* out = static_cast<T*>(op.out);
    auto common = [&](auto& o) {
      o.setTag(tag);
      o.setTimeout(timeout);
    };
    switch (op.kind) {
      case OpKind::broadcast: {
        ::gloo::BroadcastOptions o(context_);
        o.setOutput<T>(out, n);
        o.setRoot(op.peer);
        common(o);
        return ::gloo::broadcast(o);
      }
      case OpKind::allgather: {
        ::gloo::AllgatherOptions o(context_);
        o.setInput<T>(in, n);
        o.setOutput<T>(out, n * world);
        common(o);
        return ::gloo::allgather(o);
      }
      case OpKind::gather: {
        ::gloo::GatherOptions o(context_);
        o.setInput<T>(in, n);
        if (is_root) o.setOutput<T>(out, n * world);
        o.setRoot(op.peer);
        common(o);
        return ::gloo::gather(o);
      }
      case OpKind::scatter: {
        ::gloo::ScatterOptions o(context_);
        if (is_root) {
          std::vector<T*> pieces(world);
          for (size_t r = 0; r < world; ++r) pieces[r] = in + r * n;
          o.setInputs<T>(pieces, n);
        }
        o.setOutput<T>(out, n);
        o.setRoot(op.peer);
        common(o);
        return ::gloo::scatter(o);
      }
      case OpKind::alltoall: {
        ::gloo::AlltoallOptions o(context_);
        o.setInput<T>(in, n * world);
        o.setOutput<T>(out, n * world);
        common(o);
        return ::gloo::alltoall(o);
      }
      case OpKind::barrier: {
        ::gloo::BarrierOptions o(context_);
        common(o);
        return ::gloo::barrier(o);
      }
      default: LOCKSTEP_CHECK(false, "unexpected operation: ", info.describe());
    }
  });
}

namespace {

// A posted send/recv on a gloo unbound buffer. gloo's waits cannot be polled (a wait that
// times out closes the pair), so one helper thread makes the single bounded wait; dropping
// the handle early aborts that wait (abortWaitSend/Recv) and joins the thread.
class GlooPending final : public engine::Pending {
 public:
  GlooPending(std::unique_ptr<::gloo::transport::UnboundBuffer> buf, bool is_send, std::string ctx,
              Millis timeout)
      : buf_(std::move(buf)), send_(is_send), ctx_(std::move(ctx)) {
    waiter_ = std::thread([this, timeout] {
      try {
        completed_ = send_ ? buf_->waitSend(timeout) : buf_->waitRecv(timeout);
      } catch (...) {
        error_ = std::current_exception();
      }
      done_.store(true, std::memory_order_release);
    });
  }
  ~GlooPending() override {
    if (!done_.load(std::memory_order_acquire)) {
      if (send_)
        buf_->abortWaitSend();
      else
        buf_->abortWaitRecv();
    }
    waiter_.join();
  }
  bool test() override {
    if (!done_.load(std::memory_order_acquire)) return false;
    if (error_) guard_gloo(ctx_, [&] { std::rethrow_exception(error_); });
    if (!completed_) LOCKSTEP_THROW(AbortedError, ctx_, ": aborted");
    return true;
  }

 private:
  std::unique_ptr<::gloo::transport::UnboundBuffer> buf_;
  const bool send_;
  const std::string ctx_;
  bool completed_ = false;
  std::exception_ptr error_;
  std::atomic<bool> done_{false};
  std::thread waiter_;
};

}  // namespace

// send/recv on an unbound buffer; the user's tag is gloo's slot (collectives use slots with
// a non-zero prefix byte, so the two never collide).
std::unique_ptr<engine::Pending> GlooProcessGroup::post(const engine::Op& op, const OpInfo& info) {
  const size_t bytes = op.count * dtype_size(op.dtype);
  const bool is_send = op.kind == OpKind::send;
  void* ptr = is_send ? const_cast<void*>(op.in) : op.out;
  std::unique_ptr<::gloo::transport::UnboundBuffer> buf;
  guard_gloo(info.describe(), [&] {
    buf = context_->createUnboundBuffer(ptr, bytes);
    if (is_send)
      buf->send(op.peer, op.tag);
    else
      buf->recv(op.peer, op.tag);
  });
  return std::make_unique<GlooPending>(std::move(buf), is_send, info.describe(), options().timeout);
}

}  // namespace lockstep::comm::gloo_backend
