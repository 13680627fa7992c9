#include "lockstep/comm/shm/shm_group.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

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
// With more ranks than cores a wait first polls between sched_yield()s for this long, then
// sleeps. The core goes to whichever peer on it is runnable, and a peer that arrives finds
// the waiters still runnable: no futex wake, no wake-up IPI between vCPUs. 2 cores, 4/8 ranks,
// alternating runs against sleeping at once: 1 KiB 11-19 us against 60-70 (4 ranks), 42-64
// against 282-297 (8); 64 KiB 25-46 against 93-106, 94-130 against 409-479 (alloc_shared
// buffers); 16 MiB staged 4.4-4.5 ms against 5.8-6.6 (4 ranks), 11.4-12.9 against 19.4-21.2
// (8). 30 us yielded less, 300 us the same within noise.
constexpr long kYieldNs = 100'000;

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

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
                   size_t chunk_bytes, int spin_us, bool spare_core, Millis timeout,
                   StreamTuner::Mode stream, const std::string& algorithm)
    : rank_(rank), world_(world),
      half_bytes_(round_up(std::max<size_t>(chunk_bytes ? chunk_bytes : kDefaultHalfBytes,
                                            size_t(world) * 64), 64)),
      ring_bytes_(kRingBytes), tuner_(stream), shared_tuner_(stream) {
  // Spinning only pays when every busy thread has a core; with more ranks than cores waits
  // yield the core for a while, then sleep. An explicit spin_us replaces both.
  // A wait its caller runs is the rank's one busy thread: it spins where the host has a CPU
  // per rank. Affinity is left out on purpose: a rank bound to one CPU still has that one.
  // A wait the group's thread runs while its caller computes is a rank's second busy thread:
  // it spins only where that thread has a core of its own (spare_core: this rank's affinity,
  // the host's CPUs among the ranks on it, or LOCKSTEP_SPARE_CORE; the one decision that
  // also steers when the engine wakes that thread).
  const int cores = int(std::thread::hardware_concurrency());
  spin_caller_ns_ = spin_us >= 0 ? long(spin_us) * 1000 : cores >= world ? 300'000 : 0;
  spin_async_ns_ = spin_us >= 0 ? long(spin_us) * 1000 : spare_core ? 300'000 : 0;
  yield_ns_ = spin_us < 0 && cores < world ? kYieldNs : 0;
  // Before the segment: a bad LOCKSTEP_ALGO fails here, on every rank alike.
  facts_ = {.world = world, .cores = cores, .yielding = yield_ns_ > 0, .slot_bytes = half_bytes_};
  plan_ = algo::Plan(algo::Path::shm, facts_, algorithm);
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
// for whoever sleeps (see algorithms/shm_allreduce_low_latency.cpp for why ringing
// late is enough).
void ShmGroup::sync(const OpInfo& info, Deadline dl) {
  const uint64_t e = ++epoch_;
  if (place_published_) {  // next to the epoch: the peers fetch the line once for both
    ctl_[rank_].shared_id[e & 1].store(place_id_, std::memory_order_relaxed);
    ctl_[rank_].shared_offset[e & 1].store(place_.offset, std::memory_order_relaxed);
  }
  ctl_[rank_].arrive.store(e, std::memory_order_release);
  auto arrived = [&](int r) { return ctl_[r].arrive.load(std::memory_order_acquire) >= e; };
  auto all = [&] {
    for (int r = 0; r < world_; ++r)
      if (!arrived(r)) return false;
    return true;
  };
  wait_until(
      *bell_, all, [&](int r) { return !arrived(r); }, info, dl, "a staging barrier", bell_);
  bell_->notify_sleepers();
  if (place_published_) check_places(info);
}

void ShmGroup::publish_place(const std::optional<SharedBlocks::Hit>& at) {
  place_ = at.value_or(SharedBlocks::Hit{});
  place_id_ = at ? at->id : kOrdinaryMemory;
  place_published_ = true;
}

// After the first barrier of an operation that published its place (the barrier's release
// and acquire carry the stores): every rank reads the same words, so every rank throws alike.
void ShmGroup::check_places(const OpInfo& info) {
  place_published_ = false;
  const size_t i = size_t(epoch_ & 1);
  auto id_of = [&](int r) { return ctl_[r].shared_id[i].load(std::memory_order_relaxed); };
  const uint64_t mine = id_of(rank_);
  int other = -1;
  for (int r = 0; r < world_ && other < 0; ++r)
    if (id_of(r) != mine) other = r;
  if (other < 0) {
    if (mine != kOrdinaryMemory)
      for (int r = 0; r < world_; ++r)
        shared_bufs_[size_t(r)] = place_.base + size_t(r) * place_.stride +
                                  ctl_[r].shared_offset[i].load(std::memory_order_relaxed);
    return;
  }
  auto where = [](uint64_t id) {
    return id == kOrdinaryMemory ? std::string("ordinary memory")
                                 : str_cat("ProcessGroup::alloc_shared allocation #", id);
  };
  const std::string msg =
      str_cat(info.describe(), ": rank ", other, "'s buffer lies in ", where(id_of(other)),
              ", this rank's (", rank_, ") in ", where(mine),
              "; every rank must pass its block of the same allocation (or "
              "ordinary memory on every rank)");
  // Where some rank passed ordinary memory, the ranks ran different rows up to here (their
  // staging halves no longer agree): the group cannot go on. Blocks of different allocations
  // ran the same row, which stops here on every rank.
  bool mixed = false;
  for (int r = 0; r < world_; ++r) mixed |= id_of(r) == kOrdinaryMemory;
  if (!mixed) LOCKSTEP_THROW(InvalidArgument, msg);
  broken_ = msg;
  LOCKSTEP_THROW(InvalidArgument, msg, "; this group is unusable now: recreate it");
}

// The collectives: argument packing, then the plan's first row that fits.
void ShmGroup::run(algo::Collective c, ShmOp& o) {
  // Sizes a shared-only row serves: where the buffer lies decides the row, so the ranks
  // check that theirs agree at the first barrier (publish_place()).
  std::optional<SharedBlocks::Hit> at;
  place_published_ = false;
  for (const algo::Plan::Choice& ch : plan_.choices(c))
    if (ch.shared_only && ch.bytes.contains(o.bytes)) {
      at = shared_->find(o.in, o.bytes, rank_);
      publish_place(at);
      break;
    }
  for (const algo::Plan::Choice& ch : plan_.choices(c)) {
    if (!ch.bytes.contains(o.bytes)) continue;
    if (ch.shared_only && !at) continue;
    if (!last_row_) last_row_ = ch.row;
    return ch.row->shm(*this, o);
  }
  LOCKSTEP_THROW(InternalError, o.info.describe(), ": no row of algorithms/table.cpp runs ",
                 algo::collective_name(c), " of ", o.bytes, " bytes");
}

void ShmGroup::allreduce(void* data, size_t count, DType dt, ReduceOp op, const OpInfo& info,
                         Deadline dl, bool* nonfinite) {
  check_usable(info);
  if (nonfinite) *nonfinite = false;
  ShmOp o{data, data, count, count * dtype_size(dt), dt, op, 0, nonfinite, info, dl};
  run_recorded(algo::Collective::allreduce, o);
}

void ShmGroup::reduce(void* data, size_t count, DType dt, ReduceOp op, int root,
                      const OpInfo& info, Deadline dl) {
  check_usable(info);
  ShmOp o{data, data, count, count * dtype_size(dt), dt, op, root, nullptr, info, dl};
  run_recorded(algo::Collective::reduce, o);
}

void ShmGroup::broadcast(void* data, size_t bytes, int root, const OpInfo& info, Deadline dl) {
  check_usable(info);
  ShmOp o{data, data, bytes, bytes, DType::u8, ReduceOp::sum, root, nullptr, info, dl};
  run_recorded(algo::Collective::broadcast, o);
}

void ShmGroup::allgather(const void* in, void* out, size_t bpr, const OpInfo& info, Deadline dl) {
  check_usable(info);
  ShmOp o{in, out, bpr, bpr, DType::u8, ReduceOp::sum, 0, nullptr, info, dl};
  run_recorded(algo::Collective::allgather, o);
}

void ShmGroup::reduce_scatter(const void* in, void* out, size_t count, DType dt, ReduceOp op,
                              const OpInfo& info, Deadline dl) {
  check_usable(info);
  ShmOp o{in, out, count, size_t(world_) * count * dtype_size(dt), dt, op, 0, nullptr, info, dl};
  run_recorded(algo::Collective::reduce_scatter, o);
}

void ShmGroup::barrier(const OpInfo& info, Deadline dl) {
  check_usable(info);
  ShmOp o{nullptr, nullptr, 0, 0, DType::u8, ReduceOp::sum, 0, nullptr, info, dl};
  run_recorded(algo::Collective::barrier, o);
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

}  // namespace lockstep::comm::shm
