#include "lockstep/comm/shm/shm_group.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_transport.h"
#include "lockstep/core/error.h"
#include "lockstep/core/proc_state.h"

namespace lockstep::comm::shm {
namespace {

constexpr size_t kDefaultHalfBytes = 1 << 20;
constexpr size_t kRingBytes = 256 << 10;
constexpr size_t kPage = 4096;
constexpr long kMaxSleepNs = 20'000'000;        // re-check liveness and abort this often
constexpr long kLivenessPeriodNs = 100'000'000;
// All-reduces up to this size (per rank) take one barrier instead of two: every rank folds
// the whole buffer from every slot itself. Latency is all that counts at these sizes.
constexpr size_t kOneBarrierBytes = 16 << 10;
// The same with more ranks than cores when their waits sleep at once (LOCKSTEP_SHM_SPIN_US=0).
// A barrier then costs a futex wake and a turn of the scheduler for every rank (tens to
// hundreds of microseconds in a VM), more than folding P copies of up to 256 KiB: 4 ranks on
// 2 cores, 64 KiB 85 us against 133 with two barriers, 256 KiB 155 against 181; 8 ranks,
// 64 KiB 356-388 against 559-594. From 512 KiB (8 ranks) the P-fold reading costs more.
constexpr size_t kOneBarrierBytesOversubscribed = 256 << 10;
// With more ranks than cores a wait first polls between sched_yield()s for this long, then
// sleeps. The core goes to whichever peer on it is runnable, and a peer that arrives finds
// the waiters still runnable: no futex wake, no wake-up IPI between vCPUs. 2 cores, 4/8 ranks,
// alternating runs against sleeping at once: 1 KiB 11-19 us against 60-70 (4 ranks), 42-64
// against 282-297 (8); 64 KiB 25-46 against 93-106, 94-130 against 409-479 (alloc_shared
// buffers); 16 MiB staged 4.4-4.5 ms against 5.8-6.6 (4 ranks), 11.4-12.9 against 19.4-21.2
// (8). 30 us yielded less, 300 us the same within noise.
constexpr long kYieldNs = 100'000;
// All-reduces up to this size (per rank) take the low-latency path: no barrier at all. Each
// rank writes its data into its own low-latency slot behind or beside tags holding the
// operation's epoch (stored after the data, with release semantics); readers poll the tags.
//  - Up to kLineMessageBytes, in lines: 56 bytes of data per 64-byte cache line, each line
//    with its own tag. A reader polls every line's tag, so its polls fetch all lines at once
//    as they are written: one cache-line transfer per peer, not one for a header and then
//    one for the rest (2 ranks, 64-256 B: 0.52-0.57 us against 0.58-0.67).
//  - Above, contiguous behind one tag: polling many lines while the writer fills them makes
//    them bounce between the cores (4 KiB: 2.6 us in lines against 1.55 contiguous).
constexpr size_t kLowLatencyBytes = 4 << 10;
constexpr size_t kLineData = 56;  // a multiple of every dtype's size
constexpr size_t kLineMessageBytes = 8 * kLineData;
constexpr size_t kTagBytes = 8;

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
uint8_t* u8(void* p) { return static_cast<uint8_t*>(p); }
const uint8_t* u8(const void* p) { return static_cast<const uint8_t*>(p); }

// A process is gone when kill() says so or /proc shows it dead or a zombie (a killed child
// stays a zombie until its parent reaps it).
bool process_dead(int pid) {
  if (pid <= 0 || pid == ::getpid()) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  const char state = proc_state(pid);
  return state == 0 || state == 'Z' || state == 'X';
}

}  // namespace

ShmGroup::ShmGroup(store::Store& store, const std::string& prefix, int rank, int world,
                   size_t chunk_bytes, int spin_us, Millis timeout, StreamTuner::Mode stream)
    : rank_(rank), world_(world),
      half_bytes_(round_up(std::max<size_t>(chunk_bytes ? chunk_bytes : kDefaultHalfBytes,
                                            size_t(world) * 64), 64)),
      ring_bytes_(kRingBytes), tuner_(stream), shared_tuner_(stream) {
  // Layout: [bell][low-latency bell][store modes][RankCtl x P][RingCtl x P^2]
  //         [ring data x P^2][slots: P x 2 halves][low-latency slots: P x 2 halves].
  const size_t P = size_t(world);
  const size_t modes_off = 128, ctl_off = 192, rings_off = ctl_off + P * sizeof(RankCtl);
  static_assert(2 * StreamTuner::kClasses <= 64);
  const size_t ring_data_off = round_up(rings_off + P * P * sizeof(RingCtl), kPage);
  const size_t slots_off = round_up(ring_data_off + P * P * ring_bytes_, kPage);
  const size_t ll_off = round_up(slots_off + P * 2 * half_bytes_, kPage);
  ll_half_bytes_ = round_up(kLinesRegion + kTagBytes + kLowLatencyBytes, 128);
  const size_t total = ll_off + P * 2 * ll_half_bytes_;
  seg_ = std::make_unique<ShmSegment>(store, prefix, rank, world, total, timeout);
  std::byte* b = seg_->data();
  bell_ = reinterpret_cast<FutexWord*>(b);
  ll_bell_ = reinterpret_cast<FutexWord*>(b + 64);
  ll_slots_ = b + ll_off;
  ctl_ = reinterpret_cast<RankCtl*>(b + ctl_off);
  rings_ = reinterpret_cast<RingCtl*>(b + rings_off);
  ring_data_ = b + ring_data_off;
  slots_ = b + slots_off;
  static_assert(sizeof(std::atomic<uint8_t>) == 1);
  tuner_.share(reinterpret_cast<std::atomic<uint8_t>*>(b + modes_off), rank == 0);
  shared_tuner_.share(reinterpret_cast<std::atomic<uint8_t>*>(b + modes_off + StreamTuner::kClasses), rank == 0);
  ctl_[rank].pid.store(::getpid());
  // Spinning only pays when every busy thread has a core; with more ranks than cores waits
  // yield the core for a while, then sleep. A rank whose group thread communicates while its
  // caller computes has two busy threads. An explicit spin_us replaces both.
  const int cores = int(std::thread::hardware_concurrency());
  spin_caller_ns_ = spin_us >= 0 ? long(spin_us) * 1000 : cores >= world ? 300'000 : 0;
  spin_async_ns_ = spin_us >= 0 ? long(spin_us) * 1000 : cores >= 2 * world ? 300'000 : 0;
  yield_ns_ = spin_us < 0 && cores < world ? kYieldNs : 0;
  const bool cheap_barriers = cores >= world || yield_ns_ > 0;
  one_barrier_bytes_ = std::min(cheap_barriers ? kOneBarrierBytes : kOneBarrierBytesOversubscribed, half_bytes_);
  // In shared blocks two barriers and no copies beat the staged paths from the low-latency
  // path's limit on (2 ranks, 8 KiB: 1.2-1.3 us against 2.2 with one barrier; 16 KiB: 1.4-1.5
  // against 3.1); with more ranks than cores one barrier still wins up to its limit.
  shared_min_bytes_ = cores >= world ? kLowLatencyBytes : one_barrier_bytes_;
  srcs_.resize(P);
  shared_bufs_.resize(P);
  ll_gather_.resize(P * kLineMessageBytes);
  transport_ = std::make_unique<ShmTransport>(*this);
}

ShmGroup::~ShmGroup() = default;

Transport& ShmGroup::transport() { return *transport_; }

std::byte* ShmGroup::ring_data(int from, int to) const {
  return ring_data_ + size_t(from * world_ + to) * ring_bytes_;
}

std::byte* ShmGroup::slot(int r, int half) const {
  return slots_ + (size_t(r) * 2 + size_t(half)) * half_bytes_;
}

void ShmGroup::abort() {
  aborted_ = true;
  bell_->wake_all();
  ll_bell_->wake_all();
  ctl_[rank_].doorbell.wake_all();
}

bool ShmGroup::peer_dead(int r) const { return process_dead(ctl_[r].pid.load()); }

void ShmGroup::check_usable(const OpInfo& info) const {
  if (aborted_) LOCKSTEP_THROW(AbortedError, info.describe(), ": process group aborted");
  if (!broken_.empty())
    LOCKSTEP_THROW(PeerError, info.describe(), ": shared memory group unusable after an earlier "
                   "error: ", broken_, "; recreate the process group");
}

void ShmGroup::sleep_until(FutexWord& word, const std::function<bool()>& ready,
                           const std::function<bool(int)>& waiting_on, const OpInfo& info,
                           Deadline dl, const char* what) {
  auto next_liveness = Clock::now();
  for (;;) {
    Sleeper sleeper(word);
    if (ready()) return;
    if (aborted_) LOCKSTEP_THROW(AbortedError, info.describe(), ": process group aborted");
    if (Clock::now() >= next_liveness) {
      for (int r = 0; r < world_; ++r) {
        if (r == rank_ || !waiting_on(r) || !peer_dead(r)) continue;
        broken_ = str_cat(info.describe(), ": peer rank ", r, " (pid ", ctl_[r].pid.load(),
                          ") died while this rank waited for it (", what, ")");
        throw PeerError(r, std::string(op_kind_name(info.kind)), broken_);
      }
      next_liveness = Clock::now() + std::chrono::nanoseconds(kLivenessPeriodNs);
    }
    if (dl.expired()) {
      std::string who;
      int first = -1;
      for (int r = 0; r < world_; ++r)
        if (r != rank_ && waiting_on(r)) {
          who += str_cat(who.empty() ? " rank " : ", rank ", r);
          if (first < 0) first = r;
        }
      broken_ = str_cat(info.describe(), ": timed out in ", what, " waiting for", who,
                        "; that peer is stalled, stopped or calling another collective");
      throw TimeoutError(broken_);
    }
    auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(dl.remaining()).count();
    sleeper.sleep(std::max<long>(1000, std::min<long>(kMaxSleepNs, left)));
  }
}

// Barrier over the control lines: publish my epoch, wait for everyone's, then ring the bell
// for whoever sleeps (see allreduce_low_latency for why ringing late is enough).
void ShmGroup::sync(const OpInfo& info, Deadline dl) {
  const uint64_t e = ++epoch_;
  ctl_[rank_].arrive.store(e, std::memory_order_release);
  auto arrived = [&](int r) { return ctl_[r].arrive.load(std::memory_order_acquire) >= e; };
  auto all = [&] {
    for (int r = 0; r < world_; ++r)
      if (!arrived(r)) return false;
    return true;
  };
  wait_until(*bell_, all, [&](int r) { return !arrived(r); }, info, dl, "a staging barrier", bell_);
  bell_->notify_sleepers();
}

void ShmGroup::sync_shared(const SharedBlocks::Hit& at, const OpInfo& info, Deadline dl) {
  ctl_[rank_].shared_id.store(at.id, std::memory_order_relaxed);
  ctl_[rank_].shared_offset.store(at.offset, std::memory_order_relaxed);
  sync(info, dl);  // its release and acquire carry both to the peers
  int other = -1;
  for (int r = 0; r < world_; ++r) {
    if (ctl_[r].shared_id.load(std::memory_order_relaxed) != at.id) other = r;
    shared_bufs_[size_t(r)] = at.base + size_t(r) * at.stride + ctl_[r].shared_offset.load(std::memory_order_relaxed);
  }
  if (other < 0) return;
  // Every rank sees some other allocation then, and throws; the barrier keeps each rank's
  // published id in place until all have read it (the next operation would overwrite it).
  const uint64_t id = ctl_[other].shared_id.load(std::memory_order_relaxed);
  sync(info, dl);
  LOCKSTEP_THROW(InvalidArgument, info.describe(), ": rank ", other, "'s buffer lies in ProcessGroup::alloc_shared "
                 "allocation #", id, ", this rank's (", rank_, ") in #", at.id, "; every rank must pass its block "
                 "of the same allocation (or ordinary memory on every rank)");
}

void ShmGroup::barrier(const OpInfo& info, Deadline dl) {
  check_usable(info);
  sync(info, dl);
}

// All-reduce in rounds of up to half_bytes_ per rank; round k uses half-slot k%2, so a rank
// may publish round k+1 while slower peers still read round k.
//  1. publish: copy my chunk into my slot (all but my own slice, which I read in place);
//  2. reduce-scatter: after a barrier each rank folds ITS slice from every rank's slot at
//     once (cache-blocked, finished in L1), and stores it to its own buffer and its slot;
//  3. all-gather: after a second barrier each rank copies every other slice from its owner.
//  Small buffers: publish all of it, one barrier, every rank folds all slots in rank order
//  (the same order everywhere, so every rank ends with the same bits).
// Double buffering makes one barrier per operation enough: a rank overwrites half h for
// operation k+2 only after operation k+1's barrier, which every rank reaches only after it
// finished reading operation k's half h.
//  With `nonfinite` (DDP's NaN/Inf guard), each rank checks the slice it reduces in the same
//  pass, posts the answer with the barrier's epoch in its control line before the second
//  barrier, and after it reads everyone's: no second pass over the result.
void ShmGroup::allreduce(void* data, size_t count, DType dt, ReduceOp op, const OpInfo& info,
                         Deadline dl, bool* nonfinite) {
  check_usable(info);
  const size_t es = dtype_size(dt), per_round = std::max<size_t>(1, half_bytes_ / es);
  const size_t P = size_t(world_), me = size_t(rank_);
  if (nonfinite) *nonfinite = false;
  if (count * es <= kLowLatencyBytes) return allreduce_low_latency(data, count, dt, op, info, dl, nonfinite);
  if (count * es > shared_min_bytes_)
    if (const auto at = shared_->find(data, count * es, rank_))
      return allreduce_shared(data, count, dt, op, *at, info, dl, nonfinite);
  if (count * es <= one_barrier_bytes_) {
    const int half = int(chunk_++ & 1);
    std::memcpy(slot(rank_, half), data, count * es);
    sync(info, dl);
    for (size_t r = 0; r < P; ++r) srcs_[r] = r == me ? u8(data) : u8(slot(int(r), half));
    reduce_many_finish(data, nullptr, srcs_.data(), world_, count, dt, op, world_, true, nonfinite);
    return;
  }
  // How this operation stores into the slots: measured per size class (stream_tuner.h).
  const StreamTuner::Trial trial = tuner_.begin(count * es);
  const auto started = Clock::now();
  for (size_t lo = 0; lo < count; lo += per_round) {
    const size_t n = std::min(per_round, count - lo);
    const int half = int(chunk_++ & 1);
    uint8_t* mine = u8(data) + lo * es;
    uint8_t* my_slot = u8(slot(rank_, half));
    auto cut = [&](size_t r) { return n * r / P * es; };  // slice r = [cut(r), cut(r+1)) bytes
    const size_t a = cut(me), b = cut(me + 1);
    copy_to_shared(my_slot, mine, a, trial.stream);
    copy_to_shared(my_slot + b, mine + b, n * es - b, trial.stream);
    sync(info, dl);
    for (size_t r = 0; r < P; ++r) srcs_[r] = r == me ? mine + a : u8(slot(int(r), half)) + a;
    bool mine_bad = false;
    reduce_many_finish(mine + a, my_slot + a, srcs_.data(), world_, (b - a) / es, dt, op, world_,
                       trial.stream, nonfinite ? &mine_bad : nullptr);
    if (nonfinite) ctl_[rank_].nonfinite.store(((epoch_ + 1) << 1) | uint64_t(mine_bad), std::memory_order_relaxed);
    sync(info, dl);  // publishes the flag with the slice (release), so it carries epoch_ now
    if (nonfinite)
      for (size_t r = 0; r < P; ++r)
        if (ctl_[r].nonfinite.load(std::memory_order_relaxed) == ((epoch_ << 1) | 1)) *nonfinite = true;
    for (size_t r = 0; r < P; ++r)
      if (r != me) std::memcpy(mine + cut(r), u8(slot(int(r), half)) + cut(r), cut(r + 1) - cut(r));
  }
  tuner_.end(trial, count * es, std::chrono::duration<double>(Clock::now() - started).count());
}

// All-reduce of a buffer inside blocks the ranks allocated together (every rank's buffer in
// its own block of the same allocation, at any offset): no staging. After a barrier (every
// block holds its rank's input) each rank folds its slice from every block at once, stores
// the result in its own block and in every peer's (with two ranks in the same pass), and a
// second barrier says every slice has arrived everywhere. Nobody else touches slice s of any block: rank s
// reads it, then overwrites it, so the stores race with no reader. After the second barrier
// no rank touches another's block, so each may reuse its buffer at once.
void ShmGroup::allreduce_shared(void* data, size_t count, DType dt, ReduceOp op,
                                const SharedBlocks::Hit& at, const OpInfo& info, Deadline dl,
                                bool* nonfinite) {
  const size_t es = dtype_size(dt), P = size_t(world_), me = size_t(rank_);
  auto block = [&](size_t r) { return u8(shared_bufs_[r]); };
  auto cut = [&](size_t r) { return count * r / P * es; };
  const size_t a = cut(me), b = cut(me + 1);
  const StreamTuner::Trial trial = shared_tuner_.begin(count * es);
  const auto started = Clock::now();
  sync_shared(at, info, dl);
  for (size_t r = 0; r < P; ++r) srcs_[r] = block(r) + a;
  bool mine_bad = false;
  void* also = P == 2 ? block(1 - me) + a : nullptr;
  reduce_many_finish(block(me) + a, also, srcs_.data(), world_, (b - a) / es, dt, op, world_,
                     trial.stream, nonfinite ? &mine_bad : nullptr);
  if (P > 2)
    for (size_t r = 0; r < P; ++r)
      if (r != me) copy_to_shared(block(r) + a, block(me) + a, b - a, trial.stream);
  if (nonfinite) ctl_[rank_].nonfinite.store(((epoch_ + 1) << 1) | uint64_t(mine_bad), std::memory_order_relaxed);
  sync(info, dl);
  if (nonfinite)
    for (size_t r = 0; r < P; ++r)
      if (ctl_[r].nonfinite.load(std::memory_order_relaxed) == ((epoch_ << 1) | 1)) *nonfinite = true;
  shared_tuner_.end(trial, count * es, std::chrono::duration<double>(Clock::now() - started).count());
}

void SharedBlocks::add(std::byte* base, size_t stride, size_t bytes, uint64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  blocks_.push_back({base, stride, bytes, id});
  count_.store(blocks_.size(), std::memory_order_release);
}

void SharedBlocks::remove(std::byte* base) {
  std::lock_guard<std::mutex> lk(mu_);
  std::erase_if(blocks_, [&](const Block& b) { return b.base == base; });
  count_.store(blocks_.size(), std::memory_order_release);
}

std::optional<SharedBlocks::Hit> SharedBlocks::find(const void* data, size_t bytes, int rank) const {
  if (count_.load(std::memory_order_acquire) == 0) return std::nullopt;
  const auto p = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lk(mu_);
  for (const Block& b : blocks_) {
    const auto mine = reinterpret_cast<uintptr_t>(b.base) + size_t(rank) * b.stride;
    if (p >= mine && p - mine <= b.bytes && bytes <= b.bytes - (p - mine))
      return Hit{b.base, b.stride, p - mine, b.id};
  }
  return std::nullopt;
}

// The low-latency all-reduce: publish data + tag, wait for every peer's tag of this epoch,
// fold all slots in rank order (the same order everywhere: every rank ends with the same bits).
// Two halves alternate by epoch, so no barrier is needed: a rank rewrites half h for epoch
// e + 2 only after finishing epoch e + 1, which needed every peer's epoch e + 1 data, which a
// peer writes only after it finished reading epoch e from half h.
// Sleeping peers are woken only after this rank's own wait (or before it sleeps in it): the
// wake needs a full fence after the tag store, and a fence right after it would stall until
// the peer gave up the tag's cache line — a whole line transfer, a third of the operation.
// Later is soon enough: a sleeper waits for every rank, so it cannot go on before the last
// one publishes, and the last one's wait ends at once and rings.
void ShmGroup::allreduce_low_latency(void* data, size_t count, DType dt, ReduceOp op,
                                     const OpInfo& info, Deadline dl, bool* nonfinite) {
  const size_t bytes = count * dtype_size(dt);
  const bool in_lines = bytes <= kLineMessageBytes;
  const size_t lines = in_lines ? (bytes + kLineData - 1) / kLineData : 0;
  const uint64_t e = ++ll_epoch_;
  const int half = int(e & 1);
  std::byte* mine = ll_slot(rank_, half);
  if (in_lines) {
    for (size_t i = 0; i < lines; ++i) {
      std::memcpy(mine + i * 64, u8(data) + i * kLineData, std::min(kLineData, bytes - i * kLineData));
      ll_tag(rank_, half, i).store(e, std::memory_order_release);
    }
  } else {
    std::memcpy(mine + kLinesRegion + kTagBytes, data, bytes);
    ll_head_tag(rank_, half).store(e, std::memory_order_release);
  }
  auto arrived = [this, e, half, lines, in_lines](int r) {
    if (!in_lines) return ll_head_tag(r, half).load(std::memory_order_acquire) == e;
    bool all_lines = true;  // no early exit: every line's load is issued in the same poll
    for (size_t i = 0; i < lines; ++i) all_lines &= ll_tag(r, half, i).load(std::memory_order_acquire) == e;
    return all_lines;
  };
  auto all = [&arrived, this] {
    for (int r = 0; r < world_; ++r)
      if (r != rank_ && !arrived(r)) return false;
    return true;
  };
  wait_until(*ll_bell_, all, [&](int r) { return !arrived(r); }, info, dl, "a low-latency all-reduce",
             ll_bell_);
  ll_bell_->notify_sleepers();
  for (int r = 0; r < world_; ++r) {
    const std::byte* theirs = ll_slot(r, half);
    if (r == rank_) {
      srcs_[size_t(r)] = data;
    } else if (!in_lines) {
      srcs_[size_t(r)] = theirs + kLinesRegion + kTagBytes;
    } else if (lines == 1) {
      srcs_[size_t(r)] = theirs;  // contiguous within the first line
    } else {
      std::byte* out = ll_gather_.data() + size_t(r) * kLineMessageBytes;
      for (size_t i = 0; i < lines; ++i)
        std::memcpy(out + i * kLineData, theirs + i * 64, std::min(kLineData, bytes - i * kLineData));
      srcs_[size_t(r)] = out;
    }
  }
  reduce_many_finish(data, nullptr, srcs_.data(), world_, count, dt, op, world_, true, nonfinite);
}

// Reduce = all-reduce (every rank gets the result; non-roots' buffers are unspecified anyway).
void ShmGroup::reduce(void* data, size_t count, DType dt, ReduceOp op, int root,
                      const OpInfo& info, Deadline dl) {
  allreduce(data, count, dt, op, info, dl);
}

// Broadcast: per round the root publishes a chunk in its slot; after one barrier everyone
// copies it out (the next round's barrier proves the reads of this half are done).
void ShmGroup::broadcast(void* data, size_t bytes, int root, const OpInfo& info, Deadline dl) {
  check_usable(info);
  for (size_t lo = 0; lo < bytes; lo += half_bytes_) {
    const size_t n = std::min(half_bytes_, bytes - lo);
    const int half = int(chunk_++ & 1);
    if (rank_ == root) copy_to_shared(slot(root, half), u8(data) + lo, n, tuner_.preferred(bytes));
    sync(info, dl);
    if (rank_ != root) std::memcpy(u8(data) + lo, slot(root, half), n);
  }
}

// All-gather: per round every rank publishes a chunk of its input; after a barrier each
// copies every peer's chunk into place.
void ShmGroup::allgather(const void* in, void* out, size_t bpr, const OpInfo& info, Deadline dl) {
  check_usable(info);
  if (bpr > shared_min_bytes_)
    if (const auto at = shared_->find(in, bpr, rank_)) return allgather_shared(in, out, bpr, *at, info, dl);
  for (size_t lo = 0; lo < bpr; lo += half_bytes_) {
    const size_t n = std::min(half_bytes_, bpr - lo);
    const int half = int(chunk_++ & 1);
    copy_to_shared(slot(rank_, half), u8(in) + lo, n, tuner_.preferred(bpr));
    sync(info, dl);
    for (int r = 0; r < world_; ++r) {
      const uint8_t* src = r == rank_ ? u8(in) + lo : u8(slot(r, half));
      std::memcpy(u8(out) + size_t(r) * bpr + lo, src, n);
    }
  }
}

// All-gather of inputs inside shared blocks: after a barrier (every block holds its rank's
// input) each rank copies every peer's input straight into place; the second barrier keeps
// each input unchanged until every peer has read it.
void ShmGroup::allgather_shared(const void* in, void* out, size_t bpr, const SharedBlocks::Hit& at,
                                const OpInfo& info, Deadline dl) {
  sync_shared(at, info, dl);
  for (size_t r = 0; r < size_t(world_); ++r) {
    const uint8_t* src = r == size_t(rank_) ? u8(in) : u8(shared_bufs_[r]);
    if (u8(out) + r * bpr != src) std::memcpy(u8(out) + r * bpr, src, bpr);
  }
  sync(info, dl);
}

// Reduce-scatter: per round every rank publishes, for each peer j, the chunk of its input
// that j owns; after a barrier each rank folds its own piece from all slots at once.
void ShmGroup::reduce_scatter(const void* in, void* out, size_t count, DType dt, ReduceOp op,
                              const OpInfo& info, Deadline dl) {
  check_usable(info);
  const size_t es = dtype_size(dt), P = size_t(world_), me = size_t(rank_);
  if (P * count * es > shared_min_bytes_)
    if (const auto at = shared_->find(in, P * count * es, rank_))
      return reduce_scatter_shared(out, count, dt, op, *at, info, dl);
  const size_t per_round = std::max<size_t>(1, half_bytes_ / (P * es));
  for (size_t lo = 0; lo < count; lo += per_round) {
    const size_t n = std::min(per_round, count - lo);
    const int half = int(chunk_++ & 1);
    uint8_t* my_slot = u8(slot(rank_, half));
    for (size_t j = 0; j < P; ++j)
      if (j != me) copy_to_shared(my_slot + j * n * es, u8(in) + (j * count + lo) * es, n * es, tuner_.preferred(count * es));
    sync(info, dl);
    for (size_t r = 0; r < P; ++r)
      srcs_[r] = r == me ? u8(in) + (me * count + lo) * es : u8(slot(int(r), half)) + me * n * es;
    reduce_many_finish(u8(out) + lo * es, nullptr, srcs_.data(), world_, n, dt, op, world_);
  }
}

// Reduce-scatter of inputs inside shared blocks: after a barrier each rank folds its piece
// from every rank's block at once (rank order, as everywhere), with no staging; the second
// barrier keeps each input unchanged until every peer has read its piece.
void ShmGroup::reduce_scatter_shared(void* out, size_t count, DType dt, ReduceOp op,
                                     const SharedBlocks::Hit& at, const OpInfo& info, Deadline dl) {
  const size_t piece = count * dtype_size(dt) * size_t(rank_);
  sync_shared(at, info, dl);
  for (size_t r = 0; r < size_t(world_); ++r) srcs_[r] = u8(shared_bufs_[r]) + piece;
  reduce_many_finish(out, nullptr, srcs_.data(), world_, count, dt, op, world_);
  sync(info, dl);
}

}  // namespace lockstep::comm::shm
