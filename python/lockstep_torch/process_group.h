// LockstepProcessGroup: a PyTorch c10d backend whose collectives run on lockstep's
// comm::ProcessGroup ("native": shared memory on one host, tcp across hosts). __init__.py
// registers it as torch.distributed backend "lockstep":
//
//   import lockstep_torch, torch.distributed as dist
//   dist.init_process_group("lockstep")          # env://, tcp:// or store=... as with gloo
//
// Contiguous CPU tensors are handed to lockstep in place; others (and int8/int16/bool
// reductions, which lockstep reduces in int32) go through a contiguous staging copy that is
// copied back before the Work completes. CUDA tensors run on lockstep's nccl backend, in
// place on the device (on(): one GPU per process; lockstep's stream waits for an event on the
// tensors' current stream, the caller does not). Works
// complete in issue order (CompletionQueue): on the thread that waits for one, or on the group's
// completer thread when someone wants a Work's get_future() from Python (comm hooks chain on it); a
// collective's future asked for from C++ without the GIL (DDP's reducer) is completed by the asking
// thread where lockstep's thread has no core of its own (ProcessGroup::spare_core). Errors (a dead
// peer, a timeout) reach Python as RuntimeErrors naming the rank and the operation.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Stream.h>
#include <c10/util/Optional.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "compat.h"
#include "lockstep/comm/process_group.h"

namespace lockstep_torch {

class C10dStore;
class CompletionQueue;

// One issued operation as PyTorch sees it: the lockstep operations that carry it, what to
// do after they succeed (copy staged results back), and the future DDP's hooks chain on.
class LockstepWork final : public c10d::Work {
 public:
  LockstepWork(int rank, c10d::OpType type, std::vector<at::Tensor> outputs,
               std::chrono::milliseconds timeout, std::weak_ptr<CompletionQueue> queue);
  bool wait(std::chrono::milliseconds timeout) override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;
  bool isCompleted() override;
  std::vector<at::Tensor> result() override;

  // While the group issues it: a lockstep operation that carries it, a buffer that must live
  // until it completes, and a step to run after its operations succeed (a copy back).
  void add(lockstep::comm::Work op) { ops_.push_back(std::move(op)); }
  void hold(at::Tensor buf) { keep_.push_back(std::move(buf)); }
  // Steps run on the issuing stream when the outputs are CUDA tensors.
  void then(std::function<void()> step) { finishers_.push_back(std::move(step)); }

 private:
  friend class CompletionQueue;
  void complete(std::exception_ptr error);  // the completer or a waiter, in issue order
  bool runs_on_asker() const;

  std::vector<lockstep::comm::Work> ops_;
  std::vector<std::function<void()>> finishers_;  // after ops_ succeed: copy staged results back
  std::vector<at::Tensor> outputs_;
  std::vector<at::Tensor> keep_;  // staging buffers and inputs, alive until completion
  // CUDA outputs: the stream current when the Work was made, which finishers_ run on.
  c10::optional<c10::Stream> stream_;  // c10::optional: what c10 takes in 1.13 and 2.x
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
  std::weak_ptr<CompletionQueue> queue_;
};

// The Works of one group not yet complete, in issue order, and whoever completes them.
// A thread blocked in LockstepWork::wait() completes its Work (and any queued before it)
// itself: a synchronous collective costs no thread hand-off here. The group's completer
// thread completes the Works whose future or state someone wants (getFuture(): DDP's
// buckets, isCompleted()) and, to bound what queued Works hold, any beyond kUnwatched.
// Shared with the Works (weakly), so a Work outliving its group is harmless.
class CompletionQueue {
 public:
  using WorkPtr = c10::intrusive_ptr<LockstepWork>;
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kUnwatched = 64;

  void push(WorkPtr w, std::vector<WorkPtr>& retired_out);
  // The completer is to complete every queued Work (a future or a state is wanted).
  void want();
  // The completer thread: until stop() and nothing is left.
  void run();
  // A waiter: completes the queued Works up to `me` while `me` is still queued, waiting
  // (until `deadline`) while someone else completes one.
  void complete_through(const LockstepWork* me, Clock::time_point deadline);
  void stop();
  bool quiesce(std::chrono::milliseconds timeout);
  void clear_failed();
  // How many Works the completer thread completed (the others: the threads that waited).
  uint64_t completed_by_completer() const { return by_completer_.load(std::memory_order_relaxed); }
  // Whether a collective's future asked for from C++ without the GIL (DDP's reducer) is
  // completed by the asking thread (LockstepWork::getFuture). Set once, before any Work.
  void set_futures_on_caller(bool on) { futures_on_caller_ = on; }
  bool futures_on_caller() const { return futures_on_caller_; }

 private:
  bool queued(const LockstepWork* w) const;
  bool complete_one(const WorkPtr& w);  // without the lock; false: it failed
  void retire(WorkPtr w, bool ok);

  std::mutex mu_;
  std::condition_variable completer_cv_;  // wanted, or stop
  std::condition_variable waiter_cv_;     // a completion ended
  std::deque<WorkPtr> pending_;
  std::vector<WorkPtr> retired_;  // completed; released by the next push() or the destructor
  std::vector<WorkPtr> failed_;   // failed works keep their buffers until lockstep lets go
  bool busy_ = false;             // someone is completing the front Work
  bool wanted_ = false;           // the completer completes until the queue is empty
  bool stop_ = false;
  bool futures_on_caller_ = false;
  std::atomic<uint64_t> by_completer_{0};
};

// LOCKSTEP_TORCH_FUTURES_ON_CALLER (1, 0, or auto: where lockstep's thread has no spare core).
bool futures_on_caller(bool spare_core);

// all_to_all_single's rows per peer, checked against the tensors: in[j] rows go to rank j,
// out[j] rows come from rank j (split sizes left empty: equal rows for every rank).
struct AllToAllSplits {
  AllToAllSplits(const at::Tensor& input, const at::Tensor& output,
                 const std::vector<int64_t>& in_sizes, const std::vector<int64_t>& out_sizes,
                 int world);
  std::vector<int64_t> in, out;
};

class LockstepProcessGroup final : public compat::BackendBase {
 public:
  // group_name names the group in lockstep's errors; the store is already prefixed per group.
  LockstepProcessGroup(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                       std::chrono::milliseconds timeout, const std::string& group_name);
  ~LockstepProcessGroup() override;

  const std::string getBackendName() const override { return "lockstep"; }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(
      std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors,
                                        const c10d::ReduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs,
                                        std::vector<at::Tensor>& inputs,
                                        const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs,
                                         std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& outputs,
                                                std::vector<std::vector<at::Tensor>>& inputs,
                                                const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                               std::vector<int64_t>& output_split_sizes,
                                               std::vector<int64_t>& input_split_sizes,
                                               const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& outputs,
                                          std::vector<at::Tensor>& inputs,
                                          const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dst, int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int src, int tag) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override;
  void monitoredBarrier(const c10d::BarrierOptions& opts, bool wait_all_ranks) override;
  void setSequenceNumberForGroup() override {}
  uint64_t getSequenceNumberForGroup() override { return issued_; }

  // Which lockstep transport carries the group ("shm", "tcp" or "none"), for tests and logs.
  std::string transport() const;
  // Thread hand-offs, for tests and benchmarks: how many operations lockstep ran on the thread
  // that waited for them, and how many Works the completer thread completed.
  struct Stats {
    uint64_t ran_on_waiter = 0;
    uint64_t completed_by_completer = 0;
    bool futures_on_caller = false;  // CompletionQueue::futures_on_caller
    uint64_t share_votes = 0;        // share_if_agreed(): votes taken
    uint64_t moved_to_shared = 0;    // ... and storages moved into shared memory
  };
  Stats stats() const;
  // Waits (up to `timeout`) until every issued Work is complete and the completer thread is
  // idle. At interpreter exit (__init__.py): a completer still releasing a Python callback
  // would take the GIL while Python finalizes, and be ended by pthread_exit (std::terminate).
  // Call without the GIL.
  bool quiesce(std::chrono::milliseconds timeout);

 private:
  using WorkPtr = c10::intrusive_ptr<LockstepWork>;
  WorkPtr make_work(c10d::OpType type, std::vector<at::Tensor> outputs,
                    std::chrono::milliseconds timeout) const;
  // Starts the lockstep operations of `work` (start adds them) and queues it for completion.
  c10::intrusive_ptr<c10d::Work> issue(WorkPtr work,
                                       const std::function<void(LockstepWork&)>& start);
  void alltoall_uneven(LockstepWork& w, const at::Tensor& input, const at::Tensor& output,
                       const AllToAllSplits& splits, const c10d::AllToAllOptions& opts);
  // The lockstep group for an operation on `t` (and `other`, on the same device), for one
  // issuing expression (`on(t, "allreduce")->allreduce(...)`): the native group for CPU
  // tensors; for CUDA tensors the nccl group (made on first use), under a DeviceOrder on an
  // event recorded on the tensors' current stream.
  struct Target {
    lockstep::comm::ProcessGroup& pg;
    std::optional<lockstep::comm::DeviceOrder> order;
    lockstep::comm::ProcessGroup* operator->() const { return &pg; }
  };
  Target on(const at::Tensor& t, const char* op, const at::Tensor& other = {});
  // DDP's flat gradient buckets (gradient_as_bucket_view=True) into the group's shared memory,
  // where the all-reduce reads the peers' buckets in place instead of copying each through
  // staging slots (process_group.cpp).
  void share_if_agreed(const at::Tensor& buf);
  static constexpr size_t kShareMinBytes = 256 << 10;
  static constexpr int kShareVotes = 64;
  std::chrono::milliseconds pick(std::chrono::milliseconds op_timeout) const;
  void check_rank(int64_t r, const char* what, const char* op) const;

  std::unique_ptr<C10dStore> store_;  // outlives pg_, which holds a reference to it
  std::unique_ptr<lockstep::comm::ProcessGroup> pg_;
  std::unique_ptr<lockstep::comm::ProcessGroup> cuda_pg_;  // CUDA tensors' (on())
  c10::Device cuda_device_{c10::DeviceType::CUDA, 0};
  std::chrono::milliseconds timeout_;
  std::string group_name_;
  uint64_t issued_ = 0;
  // share_if_agreed(), under issue_mu_: the votes left (none where the group has no shared
  // memory or LOCKSTEP_TORCH_SHARE_BUFFERS=0), the storages voted on so far (a storage is moved
  // only the second time it is seen), those it moved, the sizes no longer voted on, and the
  // counts for stats().
  int share_votes_left_ = 0;
  std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>> share_seen_, share_moved_;
  std::unordered_set<size_t> share_settled_;
  uint64_t share_votes_ = 0, moved_to_shared_ = 0;

  mutable std::mutex issue_mu_;  // lockstep operations and the queue in the same order
  std::shared_ptr<CompletionQueue> queue_ = std::make_shared<CompletionQueue>();
  std::thread completer_;
};

}  // namespace lockstep_torch
