// EngineGroup: what every backend on an existing engine (mpi, gloo, nccl) shares — argument
// checks, sequence numbers, shortcuts for world size 1 and empty buffers, the issue-order
// queue and the worker thread that runs it, abort and the "broken after a failure" state,
// and (once attach_store() was called) the OpMonitor the native group uses too: the flight
// recorder, LOCKSTEP_DEBUG=detail's check of every collective's signature, and the report of
// which rank never arrived when an operation fails.
// A backend implements execute(): one operation, run to completion or to its deadline, on
// the worker thread (so the engine is only ever driven from one thread per group).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "lockstep/comm/op_monitor.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/core/clock.h"

namespace lockstep::comm::engine {

// One queued operation, as the ProcessGroup call described it.
struct Op {
  OpKind kind = OpKind::barrier;
  const void* in = nullptr;  // separate input (allgather, reduce_scatter, gather, ..., send)
  void* out = nullptr;       // output; the data of in-place ops (allreduce, broadcast, reduce, recv)
  size_t count = 0;          // elements per rank, as in process_group.h
  DType dtype = DType::f32;
  ReduceOp op = ReduceOp::sum;
  int peer = -1;             // root of rooted collectives; dst/src of send/recv
  uint32_t tag = 0;
};

// A posted point-to-point transfer, polled by the worker between other operations (so that
// a send and the matching receive queued behind it on another rank cannot deadlock).
class Pending {
 public:
  virtual ~Pending() = default;  // cancels the transfer if it did not complete
  // True once complete; throws on failure.
  virtual bool test() = 0;
};

class EngineGroup : public ProcessGroup {
 public:
  ~EngineGroup() override;

  int rank() const final { return rank_; }
  int size() const final { return world_; }
  std::string backend_name() const final { return backend_; }

  Work allreduce(void* data, size_t count, DType dtype, ReduceOp op) final;
  Work broadcast(void* data, size_t count, DType dtype, int root) final;
  Work reduce(void* data, size_t count, DType dtype, ReduceOp op, int root) final;
  Work allgather(const void* in, void* out, size_t count, DType dtype) final;
  Work reduce_scatter(const void* in, void* out, size_t count, DType dtype, ReduceOp op) final;
  Work gather(const void* in, void* out, size_t count, DType dtype, int root) final;
  Work scatter(const void* in, void* out, size_t count, DType dtype, int root) final;
  Work alltoall(const void* in, void* out, size_t count, DType dtype) final;
  Work barrier() final;
  Work send(const void* data, size_t count, DType dtype, int dst, uint32_t tag) final;
  Work recv(void* data, size_t count, DType dtype, int src, uint32_t tag) final;
  std::unique_ptr<ProcessGroup> new_group(const std::vector<int>& ranks) final;
  void abort() final;

 protected:
  EngineGroup(std::string backend, int rank, int world, Options options);

  // The derived constructor calls start_worker() once its engine is ready, and its destructor
  // calls stop_worker() before tearing the engine down.
  void start_worker();
  void stop_worker();
  // Before start_worker(): the store every rank of the group shares, for the OpMonitor.
  void attach_store(store::Store& store);
  store::Store* attached_store() const { return store_; }

  const Options& options() const { return opt_; }
  // With false, a group of one rank still runs its operations through the engine (to test
  // an engine on one device); by default they are answered locally.
  void set_single_rank_shortcut(bool on) { single_rank_shortcut_ = on; }
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }
  const std::atomic<bool>* abort_flag() const { return &aborted_; }

  // Runs one operation on the worker thread; throws TimeoutError/PeerError/AbortedError.
  // count > 0 and size() > 1 here (the base handles the trivial cases).
  virtual void execute(const Op& op, const OpInfo& info, Deadline deadline) = 0;
  // Builds the sub-group of `ranks` (on the worker thread, in issue order, so that the
  // engine sees it between the same collectives on every rank); nullptr where not listed.
  // `name` is the sub-group's group_name, identical on every rank.
  virtual std::unique_ptr<ProcessGroup> make_subgroup(const std::vector<int>& ranks,
                                                      const std::string& name,
                                                      Deadline deadline) = 0;
  // Posts a send/recv and returns its handle, or nullptr to have execute() run it blocking.
  virtual std::unique_ptr<Pending> post(const Op& op, const OpInfo& info) { return nullptr; }
  // Called by abort() from any thread: make a running execute() return (by throwing) soon.
  // (The worker also sees aborted() turn true; polling engines need nothing more.)
  virtual void interrupt() {}
  // The world-size-1 shortcuts copy with this (device-memory engines override it).
  virtual void copy_local(void* dst, const void* src, size_t bytes);

 private:
  // Runs an operation, or posts it and returns what to poll.
  using Body = std::function<std::unique_ptr<Pending>(const OpInfo&, Deadline)>;
  struct Task {
    std::shared_ptr<WorkState> state;
    Body body;
    std::string signature;  // debug checks only; empty for point-to-point
    size_t bytes = 0;       // for the flight recorder
  };
  struct Posted {
    std::shared_ptr<WorkState> state;
    std::unique_ptr<Pending> pending;
    Deadline deadline;
  };

  Work submit(OpKind kind, Body body, std::string signature = {}, size_t bytes = 0);
  Work submit_op(const Op& op);
  Work done(OpKind kind);           // an already-completed operation (trivial cases)
  void worker_loop();
  void run_task(Task& task);
  // The operation's error, with the OpMonitor's report of the other ranks where it has one.
  std::exception_ptr explained(const std::exception_ptr& err, const OpInfo& info);
  // Completes what finished, failed, timed out or was aborted; true if any completed.
  bool poll_posted();
  void fail_posted(const char* why);
  void check_root(int root, OpKind kind) const;
  void check_peer(int peer, OpKind kind) const;
  OpInfo next_info(OpKind kind);
  bool local() const { return world_ == 1 && single_rank_shortcut_; }

  const std::string backend_;
  const int rank_, world_;
  const Options opt_;
  bool single_rank_shortcut_ = true;
  store::Store* store_ = nullptr;
  std::unique_ptr<OpMonitor> monitor_;  // with attach_store()

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  std::atomic<bool> aborted_{false};
  std::vector<Posted> posted_;  // worker thread only
  std::exception_ptr broken_;  // first failure: later operations fail at once with it
  uint64_t next_seq_ = 0;      // collectives (the same on every rank)
  uint64_t next_p2p_ = 0;      // point-to-point operations
  int subgroups_ = 0;
  std::thread worker_;
};

// The store prefix of the k-th group named `base` made by this rank: base + k + "/". Group
// creation is collective, so no rank can start group k+1 before every rank has counted
// itself into group k; groups of one name can thus be made again on the same store.
std::string rendezvous_prefix(store::Store& store, const std::string& base, int world);

// Rejects counts an engine with `int` counts cannot take (MPI, NCCL sizes are fine).
void check_int_count(size_t count, const OpInfo& info);

// Pooled f32 staging for engines without f16/bf16 arithmetic: widen, reduce in f32, narrow.
class WideBuffer {
 public:
  float* widen(const void* src, size_t count, DType dtype);  // returns the f32 copy
  float* reserve(size_t count);
  void narrow(void* dst, size_t count, DType dtype) const;   // writes the f32 copy back
  float* data() { return buf_.get(); }

 private:
  std::unique_ptr<float[]> buf_;
  size_t cap_ = 0;
};

}  // namespace lockstep::comm::engine
