// ShmGroup: the shared-memory data path for ranks on one host. One segment holds, per rank,
// a control line (barrier epoch, pid, doorbell) and a double-buffered staging slot; and per
// ordered pair of ranks a byte ring (the pair transport used by the generic algorithms).
//
// The fast collectives stage data in the slots and let every rank work at once on its own
// slice, reading peers' slots directly (no message passing). Waits spin briefly, then sleep
// on a futex; while asleep they check that the awaited peers' processes are still alive.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "lockstep/comm/algorithms/table.h"
#include "lockstep/comm/shm/stream_tuner.h"
#include "lockstep/comm/shm/futex.h"
#include "lockstep/comm/shm/segment.h"
#include "lockstep/comm/transport.h"
#include "lockstep/comm/types.h"
#include "lockstep/comm/task.h"
#include "lockstep/core/dtype.h"

namespace lockstep::comm::shm {

struct alignas(64) RankCtl {
  std::atomic<uint64_t> arrive;  // last barrier epoch this rank reached
  std::atomic<int32_t> pid;
  FutexWord doorbell;  // rung when a ring toward or from this rank moves
  // (barrier epoch << 1) | "my slice of this all-reduce holds a NaN or an Inf" (see allreduce)
  std::atomic<uint64_t> nonfinite;
  // Where this rank's buffer of an operation of a size that shared blocks serve lies: the
  // allocation's id (kOrdinaryMemory for none) and the offset inside its block, published
  // with the operation's first barrier, at index (that barrier's epoch & 1). A rank rewrites
  // an index only before the barrier after next, which waits for every rank to have read it.
  std::atomic<uint64_t> shared_id[2], shared_offset[2];
};
// One line: the place words travel with the epoch (ShmGroup::sync writes them together).
static_assert(sizeof(RankCtl) == 64, "RankCtl outgrew its cache line");

struct alignas(64) RingCtl {
  std::atomic<uint64_t> head;    // bytes ever written (producer)
  char pad_[56];
  std::atomic<uint64_t> tail;    // bytes ever read (consumer)
  char pad2_[56];
};

class ShmTransport;

// Memory the group's ranks allocated together (ProcessGroup::alloc_shared): one segment,
// rank r's block at base + r * stride. All-reduces, reduce-scatters and all-gathers of
// buffers inside a block read straight from the peers' blocks. Thread-safe: blocks come and
// go on the caller's thread while the group's thread looks them up.
class SharedBlocks {
 public:
  struct Hit {
    std::byte* base;  // rank 0's block; rank r's at base + r * stride
    size_t stride;
    size_t offset;    // of the buffer inside this rank's block
    uint64_t id;      // the allocation's, the same on every rank
  };
  void add(std::byte* base, size_t stride, size_t bytes, uint64_t id);
  void remove(std::byte* base);
  // Whether [data, data + bytes) lies inside this rank's block of one allocation.
  std::optional<Hit> find(const void* data, size_t bytes, int rank) const;

 private:
  struct Block {
    std::byte* base;
    size_t stride, bytes;
    uint64_t id;
  };
  mutable std::mutex mu_;
  std::vector<Block> blocks_;
  // blocks_.size(), read without the lock: every staged all-reduce asks find(), and most
  // groups never allocate shared blocks. A block being added concurrently is not visible to
  // an operation already issued, which cannot be inside it anyway.
  std::atomic<size_t> count_{0};
};

// One collective on the shm path, as the table's rows receive it (algorithms/table.h).
struct ShmOp {
  const void* in;       // all-reduce, reduce, broadcast: the data, in place (out == in)
  void* out;
  size_t count;         // elements: all-reduce and reduce of the data, reduce-scatter per rank
  size_t bytes;         // what the table chooses by: this rank's input
  DType dt;
  ReduceOp op;
  int root;
  bool* nonfinite;  // all-reduce: set when the result holds a NaN or an Inf
  const OpInfo& info;
  Deadline dl;
};

class ShmGroup {
 public:
  // chunk_bytes: staging bytes per rank per half-slot (0 = default). spin_us: how long waits
  // spin before sleeping (-1 = auto: 300 us when every busy thread has a core, else 0).
  // spare_core: whether the group's thread has a core of its own beside the caller's
  // computation (ProcessGroup::spare_core; decides the auto spin of the waits it runs).
  // stream: how large copies into the slots store (stream_tuner.h; kAuto measures).
  // algorithm: a row of algorithms/table.cpp to force, "auto", "flat" or "hierarchical"
  // (Options::algorithm after LOCKSTEP_ALGO: the caller resolves the environment).
  ShmGroup(store::Store& store, const std::string& prefix, int rank, int world, size_t chunk_bytes,
           int spin_us, bool spare_core, Millis timeout, StreamTuner::Mode stream,
           const std::string& algorithm);
  ~ShmGroup();

  Transport& transport();
  // How long a wait run by the group's thread while its caller computes spins, in ns.
  long async_spin_ns() const { return spin_async_ns_; }

  // The collectives: each runs the first row of the group's plan that fits (algorithms/table.h).
  // With `nonfinite`, *nonfinite tells whether the result holds a NaN or an Inf, found while
  // the data passes through the reduction. Every rank must ask for it on the same operations.
  void allreduce(void* data, size_t count, DType dt, ReduceOp op, const OpInfo& info, Deadline dl,
                 bool* nonfinite = nullptr);
  void reduce(void* data, size_t count, DType dt, ReduceOp op, int root, const OpInfo& info,
              Deadline dl);
  // The blocks allocated with the group: the caller adds and removes them.
  const std::shared_ptr<SharedBlocks>& shared_blocks() const { return shared_; }
  // Whether a collective whose input is `bytes` at `data` may take a shared-only row: every
  // rank must agree.
  bool in_shared_blocks(const void* data, size_t bytes) const {
    return bytes >= plan_.shared_min() && shared_->find(data, bytes, rank_).has_value();
  }
  void broadcast(void* data, size_t bytes, int root, const OpInfo& info, Deadline dl);
  void allgather(const void* in, void* out, size_t bytes_per_rank, const OpInfo& info, Deadline dl);
  void reduce_scatter(const void* in, void* out, size_t count, DType dt, ReduceOp op,
                      const OpInfo& info, Deadline dl);
  void barrier(const OpInfo& info, Deadline dl);
  void abort();
  // Whether local rank r's process has exited (gone or a zombie).
  bool peer_dead(int r) const;
  // Who runs the next operations: the thread that waits for them (then waits spin as
  // configured), or the group's thread beside the caller's computation — then waits spin
  // only while `work` has a blocked waiter (the caller's core is free) or when every rank
  // has two cores (one for its computation, one for communication).
  void set_runner(bool caller, const TaskState* work) {
    caller_runs_ = caller;
    work_ = work;
  }
  // What this group's choice of rows depends on (algorithms/table.h).
  const algo::Facts& facts() const { return facts_; }
  // The row that ran this group's last collective (tests: a forced row really runs).
  const algo::Row* last_row() const { return last_row_; }
  // Runs collective c by the plan: the first row whose range holds o.bytes (and, if it is
  // shared-only, whose input lies in a shared block). A row built on another collective
  // (reduce as all-reduce) calls this too; last_row() stays the outer row.
  void run(algo::Collective c, ShmOp& o);

  // --- primitives for the shm rows (algorithms/shm_*.cpp) ---
  int rank() const { return rank_; }
  int world() const { return world_; }
  // Staging: per rank two half-slots of slot_bytes(); a round takes the next half, so a rank
  // may publish round k+1 while slower peers still read round k.
  size_t slot_bytes() const { return half_bytes_; }
  std::byte* slot(int r, int half) const;
  int next_half() { return int(chunk_++ & 1); }
  // Barrier over the control lines (release/acquire: what a rank wrote before it, every rank
  // sees after it).
  void sync(const OpInfo& info, Deadline dl);
  // The first barrier of a shared-block operation (run() published where this rank's buffer
  // lies): after it, shared_buf(r) is rank r's buffer, which may lie at another offset of its
  // block than this rank's (an in-place all-gather's input does).
  void sync_shared(const OpInfo& info, Deadline dl) { sync(info, dl); }
  std::byte* shared_buf(int r) const { return shared_bufs_[size_t(r)]; }
  // world() source pointers for reduce_many_finish, reused by every operation (no allocation).
  const void** sources() { return srcs_.data(); }
  // sync() that also exchanges the ranks' NaN/Inf flags, for an all-reduce whose ranks each
  // reduce a slice: with `nonfinite`, posts `mine` (whether this rank's slice holds a NaN or
  // an Inf) in its control line, tagged with the barrier's epoch, and after the barrier sets
  // *nonfinite when some rank posted true for it; without, a plain sync(). The flag is stored
  // relaxed before the barrier's release and read relaxed after its acquire. A rank must pass
  // another barrier between two calls (each row that calls this passes one first): a peer
  // still reading this epoch's flags holds that barrier up, so none is overwritten unread.
  void sync_nonfinite(bool* nonfinite, bool mine, const OpInfo& info, Deadline dl) {
    if (nonfinite)
      ctl_[rank_].nonfinite.store(((epoch_ + 1) << 1) | uint64_t(mine), std::memory_order_relaxed);
    sync(info, dl);
    if (!nonfinite) return;
    for (int r = 0; r < world_; ++r)
      if (ctl_[r].nonfinite.load(std::memory_order_relaxed) == ((epoch_ << 1) | 1)) {
        *nonfinite = true;
        return;
      }
  }
  // How large copies into the slots (tuner) and into the peers' shared blocks (shared_tuner)
  // store: measured per size class (stream_tuner.h).
  StreamTuner& tuner() { return tuner_; }
  StreamTuner& shared_tuner() { return shared_tuner_; }
  // Low-latency slots: per rank two halves of [8 lines of (56 bytes of data, 8-byte tag)]
  // [tag][up to kLowLatencyBytes of data]; see shm_allreduce_low_latency.cpp.
  static constexpr size_t kLines = 8, kLineData = 56;  // 56: a multiple of every dtype's size
  static constexpr size_t kLineMessageBytes = kLines * kLineData;
  static constexpr size_t kLinesRegion = kLines * 64, kTagBytes = 8;
  static constexpr size_t kLowLatencyBytes = 4 << 10;
  uint64_t next_ll_epoch() { return ++ll_epoch_; }
  std::byte* ll_slot(int r, int half) const {
    return ll_slots_ + (size_t(r) * 2 + size_t(half)) * ll_half_bytes_;
  }
  std::atomic<uint64_t>& ll_tag(int r, int half, size_t line) const {
    return *reinterpret_cast<std::atomic<uint64_t>*>(ll_slot(r, half) + line * 64 + 56);
  }
  std::atomic<uint64_t>& ll_head_tag(int r, int half) const {
    return *reinterpret_cast<std::atomic<uint64_t>*>(ll_slot(r, half) + kLinesRegion);
  }
  FutexWord& ll_bell() const { return *ll_bell_; }  // rung by a publish when someone sleeps
  // kLineMessageBytes of scratch per rank: a peer's lines made contiguous again.
  std::byte* ll_gather(int r) { return ll_gather_.data() + size_t(r) * kLineMessageBytes; }

  // --- used by ShmTransport ---
  RankCtl& ctl(int r) const { return ctl_[r]; }
  RingCtl& ring_ctl(int from, int to) const { return rings_[from * world_ + to]; }
  std::byte* ring_data(int from, int to) const;
  size_t ring_bytes() const { return ring_bytes_; }
  // Spins (or, with more ranks than cores, yields), then sleeps on `word` until ready();
  // `waiting_on(r)` says which ranks hold us up (checked for death while asleep and named on
  // timeout). The spin is inline: a small collective's whole wait is usually its first few
  // polls. `owed`: a bell this rank must ring for what it published just before; rung before
  // sleeping, else the caller rings it once the wait is over (see allreduce_low_latency).
  template <class Ready, class WaitingOn>
  void wait_until(FutexWord& word, const Ready& ready, const WaitingOn& waiting_on,
                  const OpInfo& info, Deadline dl, const char* what, FutexWord* owed = nullptr) {
    if (ready()) return;
    if (const long ns = spin_ns(); ns > 0) {
      Clock::time_point until{};  // set after the first polls: most waits end within them
      for (bool first = true;; first = false) {
        for (int i = 0; i < 32; ++i) {
          cpu_relax();
          if (ready()) return;
        }
        const auto now = Clock::now();
        if (first) until = now + std::chrono::nanoseconds(ns);
        else if (now >= until) break;
      }
    } else if (yield_ns_ > 0) {
      const auto until = Clock::now() + std::chrono::nanoseconds(yield_ns_);
      do {
        std::this_thread::yield();  // the core goes to a peer that needs it, if one is runnable
        if (ready()) return;
      } while (Clock::now() < until);
    }
    if (owed) owed->notify_sleepers();
    sleep_until(word, ready, waiting_on, info, dl, what);
  }
  void check_usable(const OpInfo& info) const;

 private:
  // How long waits spin before sleeping (see set_runner).
  long spin_ns() const {
    return caller_runs_ || (work_ && work_->has_blocked_waiter()) ? spin_caller_ns_ : spin_async_ns_;
  }
  // wait_until's second phase: sleeps on `word`, waking to check abort, deadline and liveness.
  void sleep_until(FutexWord& word, const std::function<bool()>& ready,
                   const std::function<bool(int)>& waiting_on, const OpInfo& info, Deadline dl,
                   const char* what);
  // Before an operation of a size that a shared-only row serves: where this rank's buffer lies
  // (`at`, or ordinary memory), which its first barrier publishes and after which sync() checks
  // that every rank's lies in the same place (check_places()). The ranks agree on the size,
  // not on the memory: each picks its row by its own buffer, and a shared block on one rank
  // with ordinary memory on another would run two rows against each other.
  void publish_place(const std::optional<SharedBlocks::Hit>& at);
  void check_places(const OpInfo& info);
  static constexpr uint64_t kOrdinaryMemory = UINT64_MAX;
  void run_recorded(algo::Collective c, ShmOp& o) {
    last_row_ = nullptr;
    run(c, o);
  }
  [[noreturn]] void fail(std::exception_ptr e, const std::string& msg);

  const int rank_, world_;
  size_t half_bytes_, ring_bytes_;
  std::unique_ptr<ShmSegment> seg_;
  FutexWord* bell_ = nullptr;   // barrier futex (in the segment)
  RankCtl* ctl_ = nullptr;
  RingCtl* rings_ = nullptr;
  std::byte* ring_data_ = nullptr;
  std::byte* slots_ = nullptr;
  FutexWord* ll_bell_ = nullptr;  // rung by a low-latency publish when someone sleeps
  std::byte* ll_slots_ = nullptr;
  size_t ll_half_bytes_ = 0;
  uint64_t ll_epoch_ = 0;         // low-latency all-reduces done
  uint64_t epoch_ = 0;           // barriers passed
  uint64_t chunk_ = 0;           // staging rounds done (selects the half-slot)
  long spin_caller_ns_, spin_async_ns_;
  long yield_ns_;  // how long a wait that does not spin polls between sched_yield()s first
  bool caller_runs_ = true;
  const TaskState* work_ = nullptr;
  std::atomic<bool> aborted_{false};
  std::string broken_;
  std::vector<const void*> srcs_;        // per-round source pointers (no allocation per call)
  std::vector<std::byte*> shared_bufs_;  // every rank's buffer of a shared-block operation
  bool place_published_ = false;         // publish_place() was called for the next barrier
  SharedBlocks::Hit place_{};            // this rank's, when its buffer lies in a shared block
  uint64_t place_id_ = kOrdinaryMemory;
  std::vector<std::byte> ll_gather_;  // peers' low-latency lines made contiguous again
  StreamTuner tuner_;
  StreamTuner shared_tuner_;  // how allreduce_shared stores into the peers' blocks
  std::shared_ptr<SharedBlocks> shared_ = std::make_shared<SharedBlocks>();
  algo::Facts facts_;
  algo::Plan plan_;               // the table's rows for this group (algorithms/table.h)
  const algo::Row* last_row_ = nullptr;
  std::unique_ptr<ShmTransport> transport_;
};

}  // namespace lockstep::comm::shm
