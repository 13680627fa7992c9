// EngineGroup: the one engine under every backend (native, mpi, gloo, nccl). It owns what a
// process group does around an operation: argument checks, sequence numbers, the shortcuts
// for world size 1 and empty buffers, the issue-order queue and the group's thread that runs
// it, the caller-runs-it-inline hand-off (a waiter runs queued operations itself while the
// group's thread is idle: no thread hand-off on small messages, nor on any where the group's
// thread has no core of its own), posted send/recv, the
// timeouts, abort and the "broken after a failed collective" state, and (once attach_store()
// was called) the OpMonitor: the flight recorder, LOCKSTEP_DEBUG=detail's check of every
// collective's signature, and the report of which rank never arrived when an operation fails.
//
// A backend implements execute(): one operation, run to completion or to its deadline. One
// thread at a time runs operations (the group's thread, or a waiter that took the queue's
// front), in issue order; a backend that must be driven from one thread only turns the
// inline hand-off off (EngineTraits::run_inline).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lockstep/comm/op_monitor.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/comm/task.h"
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
  // allreduce_check_finite: where the backend answers (only where EngineTraits::finite_check).
  std::shared_ptr<FiniteCheck> check = nullptr;
  // The issuing thread's DeviceOrder event (process_group.h), held until the operation has
  // run: device-memory backends order their work after it; host backends ignore it.
  std::shared_ptr<void> after_event = nullptr;
};

// A posted point-to-point transfer, polled by the engine between other operations (so that
// a send and the matching receive queued behind it on another rank cannot deadlock).
class Pending {
 public:
  virtual ~Pending() = default;  // cancels the transfer if it did not complete
  // True once complete; throws on failure.
  virtual bool test() = 0;
};

// What a backend lets the engine do; set once, before start_worker().
struct EngineTraits {
  // A waiter may run queued operations on its own thread while the group's thread is idle
  // (the backend is then driven by two threads, one at a time, never at once).
  bool run_inline = true;
  // Operations up to 1 MiB do not wake a group thread that naps between operations: their
  // waiter usually runs them (needs run_inline).
  bool lazy_wake = true;
  // execute() answers Op::check for allreduce_check_finite (else the caller scans).
  bool finite_check = false;
  // The group's thread has a core of its own beside the callers' computation. Without one,
  // operations of every size are left to their waiter (or to start_now(), or to the thread's
  // next light-sleep look at the queue): started at once
  // on the group's thread, a large one would only take a computing rank's core, and cost a
  // hand-off to that thread and back (needs lazy_wake).
  bool spare_core = true;
};

// A FIFO that allocates only when it grows (a deque allocates a block every few operations).
template <class T>
class Ring {
 public:
  bool empty() const { return n_ == 0; }
  void push(T&& t) {
    if (n_ == buf_.size()) grow();
    buf_[(head_ + n_) & (buf_.size() - 1)] = std::move(t);
    ++n_;
  }
  T pop() {
    T t = std::move(buf_[head_]);
    buf_[head_] = T{};
    head_ = (head_ + 1) & (buf_.size() - 1);
    --n_;
    return t;
  }
  void swap(Ring& o) {
    buf_.swap(o.buf_);
    std::swap(head_, o.head_);
    std::swap(n_, o.n_);
  }

 private:
  void grow() {
    std::vector<T> bigger(buf_.empty() ? 16 : buf_.size() * 2);
    for (size_t i = 0; i < n_; ++i) bigger[i] = std::move(buf_[(head_ + i) & (buf_.size() - 1)]);
    buf_.swap(bigger);
    head_ = 0;
  }
  std::vector<T> buf_;  // size 0 or a power of two
  size_t head_ = 0, n_ = 0;
};

class EngineGroup : public ProcessGroup {
 public:
  ~EngineGroup() override;

  int rank() const final { return rank_; }
  int size() const final { return world_; }
  std::string backend_name() const final { return backend_; }

  Work allreduce(void* data, size_t count, DType dtype, ReduceOp op) final;
  Work allreduce_check_finite(void* data, size_t count, DType dtype, ReduceOp op,
                              std::shared_ptr<FiniteCheck> out) final;
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
  void start_now() final;
  bool spare_core() const final { return traits_.spare_core; }
  // Diagnostics: how many operations the thread that waited for them ran itself (no hand-off
  // to the group's thread).
  uint64_t ran_on_waiter() const { return ran_on_waiter_.load(std::memory_order_relaxed); }

 protected:
  EngineGroup(std::string backend, int rank, int world, Options options);

  // The derived constructor calls start_worker() once its engine is ready, and its destructor
  // calls stop_worker() before tearing the engine down.
  void start_worker();
  void stop_worker();
  // Before start_worker(): the store every rank of the group shares, for the OpMonitor.
  void attach_store(store::Store& store);
  store::Store* attached_store() const { return store_; }
  OpMonitor* monitor() const { return monitor_.get(); }
  void set_traits(EngineTraits t) { traits_ = t; }

  const Options& options() const { return opt_; }
  // With false, a group of one rank still runs its operations through the engine (to test
  // an engine on one device); by default they are answered locally.
  void set_single_rank_shortcut(bool on) { single_rank_shortcut_ = on; }
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }
  const std::atomic<bool>* abort_flag() const { return &aborted_; }

  // Runs one operation; throws TimeoutError/PeerError/AbortedError. count > 0 (but for
  // barrier) and size() > 1 here (the engine handles the trivial cases).
  virtual void execute(const Op& op, const OpInfo& info, Deadline deadline) = 0;
  // Builds the sub-group of `ranks` (in issue order, between this group's operations, so
  // that the engine sees it between the same collectives on every rank); nullptr where not
  // listed. `name` is the sub-group's group_name, identical on every rank.
  virtual std::unique_ptr<ProcessGroup> make_subgroup(const std::vector<int>& ranks,
                                                      const std::string& name,
                                                      Deadline deadline) = 0;
  // Posts a send/recv and returns its handle, or nullptr to have execute() run it blocking.
  virtual std::unique_ptr<Pending> post(const Op& op, const OpInfo& info) { return nullptr; }
  // Called by abort() (any thread) and by a destructor with operations queued: make a running
  // execute() return (by throwing) soon. Polling engines need nothing: aborted() turns true.
  virtual void interrupt() {}
  // The world-size-1 shortcuts copy with this (device-memory engines override it).
  virtual void copy_local(void* dst, const void* src, size_t bytes);
  // Just before execute(): whether the waiting caller runs it (its core is free: waits may
  // spin) or the group's thread does, beside the caller's computation.
  virtual void before_execute(bool on_caller, const TaskState& task) {}
  // Appended to the debug signature (e.g. " in_shared"); every rank must agree on it.
  virtual std::string signature_note(const Op& op) const { return {}; }
  // Whether peer p is known to have exited (a failure report does not wait for it).
  virtual bool peer_exited(int p) { return false; }

 private:
  struct Task {
    std::shared_ptr<TaskState> state;
    Op op;
    std::function<void(Deadline)> custom;  // new_group's construction; empty for operations
  };
  struct Posted {
    std::shared_ptr<TaskState> state;
    std::unique_ptr<Pending> pending;
    Deadline deadline;
  };

  Work enqueue(Op op, std::function<void(Deadline)> custom = {});
  Work done(OpKind kind);  // an already-completed operation (trivial cases)
  Work copy_or_enqueue(Op op);  // data movement: a copy on a group of one rank
  void worker_loop();
  static void help(void* self, const TaskState& state, Clock::duration wait_timeout);
  // Runs queued tasks on the calling thread, in order, until `target` is done; while another
  // thread runs one it waits for that one to end (up to wait_timeout), then takes over.
  void help_until(const WorkState* target, Clock::duration wait_timeout);
  // Gives the running_ token back (mu_ held) and wakes the waiters that want the queue.
  void end_run();
  void run_task(Task& task, bool on_caller);
  size_t op_bytes(const Op& op) const;
  std::string signature(const Op& op) const;
  // The operation's error, with the OpMonitor's report of the other ranks where it has one.
  std::exception_ptr broken_error(const OpInfo& info) const;
  std::exception_ptr explained(const std::exception_ptr& err, const OpInfo& info);
  // Completes what finished, failed, timed out or was aborted; true if any completed.
  bool poll_posted();
  void fail_posted(const char* why);
  void fail_queued(Ring<Task>& left, const char* why);  // AbortedError: the group <why>
  void check_root(int root, OpKind kind) const;
  void check_peer(int peer, OpKind kind) const;
  bool local() const { return world_ == 1 && single_rank_shortcut_; }

  const std::string backend_;
  const int rank_, world_;
  const Options opt_;
  const Clock::duration wait_default_;  // Work::wait()'s timeout
  EngineTraits traits_;
  bool single_rank_shortcut_ = true;
  store::Store* store_ = nullptr;
  std::unique_ptr<OpMonitor> monitor_;  // with attach_store()

  std::mutex mu_;
  std::condition_variable cv_;
  Ring<Task> queue_;
  bool stop_ = false;
  bool deep_sleep_ = true;  // the group's thread sleeps until notified (else it naps in slices)
  // A thread runs a task or polls posted transfers: the token that makes one thread at a
  // time drive the backend. broken_ and the posted transfers belong to its holder.
  bool running_ = false;
  // Waiters in help_until(): while there are any, the group's thread leaves the queue to them,
  // and they wait on helper_cv_ for running_ to clear.
  int helpers_ = 0;
  std::condition_variable helper_cv_;
  std::atomic<bool> aborted_{false};
  std::atomic<uint64_t> ran_on_waiter_{0};
  std::vector<Posted> posted_;  // changed under mu_ by the running_ holder
  std::exception_ptr broken_;   // first failed collective: later operations fail with it
  std::string broken_op_;       // its describe()
  uint64_t next_seq_ = 0;       // collectives (the same on every rank)
  uint64_t next_p2p_ = 0;       // point-to-point operations
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
