// Vocabulary shared by every backend: reduction operators, collective kinds, capabilities,
// and OpInfo, the (name, sequence number) that every error message of a collective carries.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lockstep::comm {

enum class ReduceOp : uint8_t { sum, avg, min, max, prod };
inline constexpr ReduceOp kAllReduceOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::min,
                                             ReduceOp::max, ReduceOp::prod};

constexpr std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::min: return "min";
    case ReduceOp::max: return "max";
    case ReduceOp::prod: return "prod";
  }
  return "?";
}
std::optional<ReduceOp> parse_reduce_op(std::string_view name);

enum class OpKind : uint8_t {
  allreduce, broadcast, reduce, allgather, reduce_scatter, gather, scatter, alltoall,
  barrier, send, recv
};

constexpr std::string_view op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::allreduce: return "allreduce";
    case OpKind::broadcast: return "broadcast";
    case OpKind::reduce: return "reduce";
    case OpKind::allgather: return "allgather";
    case OpKind::reduce_scatter: return "reduce_scatter";
    case OpKind::gather: return "gather";
    case OpKind::scatter: return "scatter";
    case OpKind::alltoall: return "alltoall";
    case OpKind::barrier: return "barrier";
    case OpKind::send: return "send";
    case OpKind::recv: return "recv";
  }
  return "?";
}

// Extras a backend may or may not offer; ask with ProcessGroup::supports().
enum class Capability : uint8_t {
  send_recv,      // point-to-point send/recv
  sub_groups,     // new_group(ranks)
  abort,          // abort() unblocks in-flight operations
  debug_checks,   // LOCKSTEP_DEBUG=detail collective verification
  shared_memory,  // a same-host shared-memory data path is in use
  device_memory,  // buffers may be GPU (CUDA) memory, read and written in place
};

// Identifies one operation of one group in error messages: "allreduce #17 (group 'default')".
struct OpInfo {
  OpKind kind = OpKind::barrier;
  uint64_t seq = 0;
  int rank = -1;
  std::string group;
  std::string describe() const;
};

}  // namespace lockstep::comm
