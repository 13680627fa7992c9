// NativeProcessGroup: lockstep's own backend. Collectives are queued and run in issue order
// on one worker thread per group, over a Transport (tcp, or shm pairs on one host) with the
// algorithms of algorithms.h, and over the shared-memory fast path for the collectives it
// covers. Created through ProcessGroup::create("native", ...).
//
// Across several hosts with several ranks on some host, all-reduce is hierarchical (see
// Options::algorithm): two sub-groups made once at construction, in the same order on every
// rank, carry it. LOCKSTEP_HOST_ID, where set, replaces hostname + boot id as the host
// identity, so that ranks in different network namespaces of one machine count as hosts.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "lockstep/comm/op_monitor.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/comm/task.h"
#include "lockstep/comm/transport.h"
#include "lockstep/core/buffer.h"

namespace lockstep::comm {

namespace shm {
class ShmGroup;
}

// The native backend's own settings (Options::backend); the environment variables named
// below override the defaults, never a value set here.
struct NativeOptions : BackendOptions {
  // Bytes per rank staged per step in the shared-memory path (0 = default).
  // Env: LOCKSTEP_SHM_CHUNK_BYTES.
  size_t shm_chunk_bytes = 0;
  // How all-reduce stores into the shared staging slots from 256 KiB on: "auto" (default:
  // measured per size class, shm/stream_tuner.h), "on" (non-temporal stores), "off" (ordinary
  // stores). Env: LOCKSTEP_SHM_STREAM.
  std::string shm_stream = "auto";
  // How long a shared-memory wait spins before it sleeps on a futex, in microseconds; -1 =
  // auto (300 when every busy thread has a core, else 0; an operation the group thread runs
  // while its caller computes counts two threads per rank; with more ranks than cores a wait
  // yields its core for up to 100 us before it sleeps). A value set here replaces both: that
  // long busy spinning, no yielding. Env: LOCKSTEP_SHM_SPIN_US.
  int shm_spin_us = -1;
};

class NativeProcessGroup final : public ProcessGroup {
 public:
  NativeProcessGroup(store::Store& store, int rank, int world, Options options);
  ~NativeProcessGroup() override;

  int rank() const override { return rank_; }
  int size() const override { return world_; }
  std::string backend_name() const override { return "native"; }
  bool supports(Capability c) const override;
  // "shm", "tcp" or "none" (world size 1).
  std::string transport_name() const;

  Work allreduce(void* data, size_t count, DType dtype, ReduceOp op) override;
  Work allreduce_check_finite(void* data, size_t count, DType dtype, ReduceOp op,
                              std::shared_ptr<FiniteCheck> out) override;
  Work broadcast(void* data, size_t count, DType dtype, int root) override;
  Work reduce(void* data, size_t count, DType dtype, ReduceOp op, int root) override;
  Work allgather(const void* in, void* out, size_t count, DType dtype) override;
  Work reduce_scatter(const void* in, void* out, size_t count, DType dtype, ReduceOp op) override;
  Work gather(const void* in, void* out, size_t count, DType dtype, int root) override;
  Work scatter(const void* in, void* out, size_t count, DType dtype, int root) override;
  Work alltoall(const void* in, void* out, size_t count, DType dtype) override;
  Work barrier() override;
  Work send(const void* data, size_t count, DType dtype, int dst, uint32_t tag) override;
  Work recv(void* data, size_t count, DType dtype, int src, uint32_t tag) override;
  std::unique_ptr<ProcessGroup> new_group(const std::vector<int>& ranks) override;
  void abort() override;
  void start_now() override;
  std::shared_ptr<std::byte[]> alloc_shared(size_t bytes) override;
  // Diagnostics: how many operations the thread that waited for them ran itself (no hand-off
  // to the group's thread).
  uint64_t ran_on_waiter() const { return ran_on_waiter_.load(std::memory_order_relaxed); }

 private:
  using Body = std::function<void(const OpInfo&, Deadline)>;
  struct Task {
    std::shared_ptr<TaskState> state;
    std::string signature;  // for debug checks; empty for point-to-point
    Body body;
    size_t bytes = 0;
  };

  // The sub-groups of the hierarchical all-reduce. group_ranks[i] is the rank in this group
  // of sub-group rank i, to name peers in errors. leaders is null on non-leaders.
  struct SubGroup {
    std::unique_ptr<NativeProcessGroup> pg;
    std::vector<int> group_ranks;
  };
  struct Hierarchy {
    SubGroup local, leaders;
  };

  void rendezvous();
  std::vector<std::string> exchange_hosts();
  bool wants_hierarchy(const std::vector<std::string>& hosts) const;
  void build_hierarchy(const std::vector<std::string>& hosts);
  void allreduce_hierarchical(void* data, size_t count, DType dt, ReduceOp op,
                              const OpInfo& info);
  // `bytes`: the operation's size, which decides whether the worker is woken at once.
  Work enqueue(OpKind kind, std::string signature, Body body, size_t bytes);
  void worker_loop();
  // Runs queued tasks on the calling thread, in order, while the worker is idle, until
  // `target` is done or another thread holds the queue front.
  void help_until(const WorkState* target);
  void run_task(Task& task, bool on_caller);
  Work allreduce_impl(void* data, size_t count, DType dtype, ReduceOp op, std::shared_ptr<FiniteCheck> check);
  static void help(void* self, const TaskState& state, Clock::duration wait_timeout);
  // After an operation failed: OpMonitor::explain (a local peer known dead is not waited for).
  std::string explain(const OpInfo& info);
  void check_root(int root, OpKind kind) const;
  void check_peer(int peer, OpKind kind) const;
  // Reductions over the transport widen f16/bf16 to f32 around `fn(buffer, dtype)`.
  void widened(void* data, size_t count, DType dt, const std::function<void(void*, DType)>& fn);

  store::Store& store_;
  const int rank_, world_;
  Options opt_;
  NativeOptions native_;
  std::string prefix_;
  std::unique_ptr<Transport> tcp_;
  Transport* transport_ = nullptr;  // tcp_ or the shm group's pair transport
  std::unique_ptr<shm::ShmGroup> shm_;
  std::unique_ptr<Hierarchy> hier_;  // set when all-reduce is hierarchical
  std::unique_ptr<OpMonitor> monitor_;  // flight recorder, debug checks, failure reports
  AlignedBuffer scratch_, wide_;  // pooled: grown, never shrunk, used by the worker only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  bool deep_sleep_ = true;   // the worker sleeps until notified (else it naps in slices)
  bool running_ = false;     // a task is being run (by the worker or a helping waiter)
  std::atomic<bool> aborted_{false};
  std::atomic<uint64_t> ran_on_waiter_{0};
  uint64_t next_seq_ = 0;    // collectives (identical on all ranks)
  uint64_t next_p2p_ = 0;    // point-to-point operations
  int subgroups_ = 0;
  int shared_allocs_ = 0;  // alloc_shared calls (names their store keys)
  std::thread worker_;
};

}  // namespace lockstep::comm
