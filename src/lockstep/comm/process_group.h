// ProcessGroup: a set of ranks that run collectives together. Create one per job (and more
// for sub-groups) from a Store, a rank and a world size; every collective returns a Work at
// once and runs, in issue order, on the backend's own thread.
//
//   auto pg = comm::ProcessGroup::create("native", store, rank, world, {});
//   pg->allreduce(grads.data(), grads.size(), DType::f32, ReduceOp::avg).wait();
//
// Buffers must stay alive and untouched until the Work completes. Every rank must issue the
// same collectives in the same order with the same dtype/count (LOCKSTEP_DEBUG=detail checks).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lockstep/comm/types.h"
#include "lockstep/comm/work.h"
#include "lockstep/core/dtype.h"
#include "lockstep/store/store.h"

namespace lockstep::comm {

// Settings only one backend understands derive from this (the native backend's:
// NativeOptions, native_process_group.h); a backend ignores another backend's.
struct BackendOptions {
  virtual ~BackendOptions() = default;
};

struct Options {
  // Bound on every blocking step (connect, each wait on a peer) and Work::wait() default.
  Millis timeout{std::chrono::seconds(300)};
  // Names the group's keys in the store; groups sharing a store need distinct names.
  std::string group_name = "default";
  // "auto" (shm when all ranks share a host, else tcp), "shm" or "tcp". Env:
  // LOCKSTEP_TRANSPORT overrides "auto". A host is its hostname + boot id, or the value of
  // LOCKSTEP_HOST_ID where set (to make network namespaces on one machine count as hosts).
  std::string transport = "auto";
  // This rank's host identity; empty: LOCKSTEP_HOST_ID, else hostname + boot id.
  std::string host_id;
  // All-reduce algorithm: "auto", "hierarchical" (shm inside each host, tcp among one leader
  // per host), "flat" (auto without hierarchy), or a row of docs/collectives.md to force:
  // pair rows ("ring", "doubling", ...) on tcp groups, shm rows ("shm_staged",
  // "shm_pipelined", ...) on shared-memory groups; a row of the other path is ignored. "auto"
  // is hierarchical when transport "auto" finds several hosts and some host runs several
  // ranks. Env: LOCKSTEP_ALGO overrides "auto".
  std::string algorithm = "auto";
  // Verify each collective's signature across ranks through the store (slow; for debugging).
  // Also enabled by LOCKSTEP_DEBUG=detail.
  bool debug_checks = false;
  // How often the group's own thread, while operations keep coming, looks for those queued
  // without waking it (up to 1 MiB, or any size without a spare core: left to their waiter,
  // who runs them without a thread hand-off; start_now() wakes it at once).
  Millis queue_poll{2};
  // The chosen backend's own settings, if any (null: its defaults and environment).
  std::shared_ptr<const BackendOptions> backend;
};

// Where allreduce_check_finite answers: written by the backend before the Work completes,
// read after wait(). Shared, so that it outlives a handle the caller dropped.
class FiniteCheck {
 public:
  // Empty when the backend did not check (the caller scans).
  std::optional<bool> nonfinite() const {
    const int8_t v = v_.load(std::memory_order_relaxed);
    return v < 0 ? std::nullopt : std::optional<bool>(v == 1);
  }
  void set(bool any) { v_.store(any ? 1 : 0, std::memory_order_relaxed); }

 private:
  std::atomic<int8_t> v_{-1};
};

// Orders device work after the caller's own. While a DeviceOrder lives on a thread, each
// operation that thread issues carries `event`: a CUDA event (cudaEvent_t) the caller
// recorded on the stream that writes the operation's buffers. A backend on device memory
// (nccl) makes its own stream wait for the event before it touches them, so neither the
// caller's thread nor the device waits for anything else (no stream or device
// synchronisation at issue). Backends on host memory ignore it: their callers synchronise
// before issuing. Each operation holds the event until it has run; the shared_ptr's deleter
// destroys it. Scopes nest; the innermost one applies.
//
//   comm::DeviceOrder after(std::shared_ptr<void>(ev, destroy_event));
//   Work w = nccl_pg->allreduce(device_ptr, n, DType::f32, ReduceOp::sum);
class DeviceOrder {
 public:
  explicit DeviceOrder(std::shared_ptr<void> event);
  ~DeviceOrder();
  DeviceOrder(const DeviceOrder&) = delete;
  DeviceOrder& operator=(const DeviceOrder&) = delete;
  // The event of this thread's innermost DeviceOrder; null outside any.
  static const std::shared_ptr<void>& current();

 private:
  std::shared_ptr<void> outer_;
};

class ProcessGroup {
 public:
  using Factory = std::function<std::unique_ptr<ProcessGroup>(
      store::Store& store, int rank, int world, const Options& options)>;

  // Creates a group through the backend registry ("native" is always there).
  static std::unique_ptr<ProcessGroup> create(const std::string& backend, store::Store& store,
                                              int rank, int world, const Options& options = {});
  // Makes another backend available to create(); throws if the name is taken.
  static void register_backend(const std::string& name, Factory factory);
  static std::vector<std::string> backends();

  virtual ~ProcessGroup() = default;
  ProcessGroup() = default;
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend_name() const = 0;
  virtual bool supports(Capability c) const = 0;

  // In place: every rank ends with op(all ranks' data). avg divides the sum by size()
  // (integer division for integer dtypes). f16/bf16 accumulate in f32.
  virtual Work allreduce(void* data, size_t count, DType dtype, ReduceOp op) = 0;
  // allreduce that also tells whether the result holds a NaN or an Inf, in `out` once the
  // Work completed: DDP's guard. The native group checks while the data passes through the
  // reduction (shared memory) or on its own thread (tcp). The default is a plain allreduce
  // and leaves `out` empty: the caller scans. Every rank must call the same one.
  virtual Work allreduce_check_finite(void* data, size_t count, DType dtype, ReduceOp op,
                                      std::shared_ptr<FiniteCheck> out) {
    return allreduce(data, count, dtype, op);
  }
  // In place: root's data is copied to every rank.
  virtual Work broadcast(void* data, size_t count, DType dtype, int root) = 0;
  // In place: root ends with op(all ranks' data); other ranks' buffers are left unspecified.
  virtual Work reduce(void* data, size_t count, DType dtype, ReduceOp op, int root) = 0;
  // out holds size()*count elements: rank r's `in` lands at out[r*count].
  virtual Work allgather(const void* in, void* out, size_t count, DType dtype) = 0;
  // in holds size()*count elements; out (count) gets op over ranks of in[rank*count ..].
  virtual Work reduce_scatter(const void* in, void* out, size_t count, DType dtype,
                              ReduceOp op) = 0;
  // out (size()*count, root only; may be null elsewhere) gets every rank's `in` in rank order.
  virtual Work gather(const void* in, void* out, size_t count, DType dtype, int root) = 0;
  // in (size()*count, root only) is cut in size() pieces; rank r gets piece r in `out`.
  virtual Work scatter(const void* in, void* out, size_t count, DType dtype, int root) = 0;
  // in and out hold size()*count elements; piece j of rank i's in lands at piece i of rank j's out.
  virtual Work alltoall(const void* in, void* out, size_t count, DType dtype) = 0;
  virtual Work barrier() = 0;
  // Point to point; the receiver must post the matching recv (same tag and count).
  virtual Work send(const void* data, size_t count, DType dtype, int dst, uint32_t tag) = 0;
  virtual Work recv(void* data, size_t count, DType dtype, int src, uint32_t tag) = 0;

  // A group of the listed ranks (group ranks follow the order of `ranks`). Every rank of this
  // group must call it, in the same order; ranks not listed get nullptr.
  virtual std::unique_ptr<ProcessGroup> new_group(const std::vector<int>& ranks) = 0;

  // For new_group implementations: throws InvalidArgument unless `ranks` are distinct members
  // of [0, world).
  static void check_group_ranks(const std::vector<int>& ranks, int world);

  // Fails every pending and running operation with AbortedError and unblocks waiters. The
  // group is unusable afterwards.
  virtual void abort() = 0;

  // A hint: nobody will wait for the operations issued so far for a while (DDP's gradient
  // buckets, launched during backward), so start them now. Without it a backend may hold a
  // small operation back for its waiter to run inline, which saves a thread hand-off when the
  // wait follows at once. Backends that always start at once ignore it.
  virtual void start_now() {}

  // Whether the group's own thread has a core beside the callers' computation (a rank with at
  // least two CPUs to itself: its affinity, and the host's CPUs shared among the ranks on it).
  // Where it has not, an operation that runs in the background only takes a computing rank's
  // core: the group then leaves operations of every size to the thread that waits for them
  // (or to start_now(), or to its own thread's next look at the queue, Options::queue_poll),
  // and a caller that issues and then waits at once had better run the operation on its own
  // thread. NativeOptions::spare_core and LOCKSTEP_SPARE_CORE force it.
  virtual bool spare_core() const { return true; }

  // The CUDA device whose memory the group reads in place (supports(Capability::
  // device_memory)), or -1. A device buffer on another GPU is the caller's error.
  virtual int cuda_device() const { return -1; }

  // Memory every rank of the group can reach: on one host, `bytes` of shared memory per rank.
  // An all-reduce of a buffer inside it, or a reduce-scatter or all-gather of an input inside
  // it, reads straight from the peers' memory, without copies through staging buffers (what
  // NCCL's registered buffers do). Every rank passes memory of the same allocation, at any
  // offset into its own; memory of different allocations is an error on every rank.
  // Collective: every rank calls it, in the same order, with the same size, and then uses its
  // allocation as the others use theirs (LOCKSTEP_DEBUG=detail checks). The memory is zeroed
  // and lives until the last copy of the pointer goes; backends without shared memory return
  // ordinary memory.
  virtual std::shared_ptr<std::byte[]> alloc_shared(size_t bytes);

  // Typed conveniences.
  template <class T>
  Work allreduce(std::span<T> data, ReduceOp op) {
    return allreduce(data.data(), data.size(), dtype_of_v<T>, op);
  }
  template <class T>
  Work broadcast(std::span<T> data, int root) {
    return broadcast(data.data(), data.size(), dtype_of_v<T>, root);
  }
};

}  // namespace lockstep::comm
