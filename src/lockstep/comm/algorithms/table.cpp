// The table of native algorithms (table.h): every choice among them, and the measurements
// behind each threshold, live here.
#include "lockstep/comm/algorithms/table.h"

#include <algorithm>
#include <array>

#include "lockstep/comm/algorithms.h"
#include "lockstep/comm/shm/shm_group.h"
#include "lockstep/core/error.h"

namespace lockstep::comm::algo {

// Each row's function, one file each (shm_*.cpp take the group's primitives; the pair
// all-reduces take a Transport, algorithms.h).
void shm_allreduce_lines(shm::ShmGroup&, shm::ShmOp&);
void shm_allreduce_low_latency(shm::ShmGroup&, shm::ShmOp&);
void shm_allreduce_shared(shm::ShmGroup&, shm::ShmOp&);
void shm_allreduce_one_barrier(shm::ShmGroup&, shm::ShmOp&);
void shm_allreduce_pipelined(shm::ShmGroup&, shm::ShmOp&);
void shm_allreduce_staged(shm::ShmGroup&, shm::ShmOp&);
void shm_reduce_as_allreduce(shm::ShmGroup&, shm::ShmOp&);
void shm_broadcast_staged(shm::ShmGroup&, shm::ShmOp&);
void shm_allgather_shared(shm::ShmGroup&, shm::ShmOp&);
void shm_allgather_staged(shm::ShmGroup&, shm::ShmOp&);
void shm_reduce_scatter_shared(shm::ShmGroup&, shm::ShmOp&);
void shm_reduce_scatter_staged(shm::ShmGroup&, shm::ShmOp&);
void shm_barrier(shm::ShmGroup&, shm::ShmOp&);

namespace {

using shm::ShmGroup;
constexpr size_t kMax = SIZE_MAX;

// Low-latency all-reduces (no barrier) up to the low-latency slot's size, ShmGroup::
// kLowLatencyBytes = 4 KiB per rank: latency is all that counts there. Up to 448 bytes in
// lines, each with its own tag (2 ranks, 64-256 B: 0.52-0.57 us against 0.58-0.67
// contiguous); above, contiguous behind one tag (4 KiB: 2.6 us in lines against 1.55).
Range lines(const Facts&) {
  return {0, ShmGroup::kLineMessageBytes};
}
Range low_latency(const Facts&) {
  return {ShmGroup::kLineMessageBytes + 1, ShmGroup::kLowLatencyBytes};
}
Range up_to_low_latency(const Facts&) {
  return {0, ShmGroup::kLowLatencyBytes};
}

// All-reduces up to this size (per rank) take one barrier instead of two: every rank folds
// the whole buffer from every slot itself. Latency is all that counts at these sizes.
constexpr size_t kOneBarrierBytes = 16 << 10;
// The same with more ranks than cores when their waits sleep at once (LOCKSTEP_SHM_SPIN_US=0).
// A barrier then costs a futex wake and a turn of the scheduler for every rank (tens to
// hundreds of microseconds in a VM), more than folding P copies of up to 256 KiB: 4 ranks on
// 2 cores, 64 KiB 85 us against 133 with two barriers, 256 KiB 155 against 181; 8 ranks,
// 64 KiB 356-388 against 559-594. From 512 KiB (8 ranks) the P-fold reading costs more.
constexpr size_t kOneBarrierBytesOversubscribed = 256 << 10;
size_t one_barrier_max(const Facts& f) {
  const bool cheap_barriers = f.cores >= f.world || f.yielding;
  return std::min(cheap_barriers ? kOneBarrierBytes : kOneBarrierBytesOversubscribed, f.slot_bytes);
}
Range one_barrier(const Facts& f) {
  return {0, one_barrier_max(f)};
}
Range fits_a_slot(const Facts& f) {
  return {0, f.slot_bytes};
}

// In shared blocks two barriers and no copies beat the staged paths from the low-latency
// path's limit on (2 ranks, 8 KiB: 1.2-1.3 us against 2.2 with one barrier; 16 KiB: 1.4-1.5
// against 3.1); with more ranks than cores one barrier still wins up to its limit.
Range shared(const Facts& f) {
  return {(f.cores >= f.world ? ShmGroup::kLowLatencyBytes : one_barrier_max(f)) + 1, kMax};
}

// Pair transports: recursive doubling while latency dominates (small messages), the
// pipelined ring when bandwidth does.
constexpr size_t kDoublingMaxBytes = 64 << 10;
Range doubling(const Facts& f) {
  return {0, f.world == 2 ? 2 * kDoublingMaxBytes : kDoublingMaxBytes};
}

Range always(const Facts&) {
  return {0, kMax};
}
Range never(const Facts&) {
  return kNever;
}

using C = Collective;
constexpr Path kShm = Path::shm, kPairs = Path::pairs;

// Consulted in this order, per collective and path; the last row of each runs every size.
constexpr Row kRows[] = {
    // name, collective, path, shared_only, when, can, shm fn, pair fn, cost. Cost: n bytes per
    // rank, P ranks; alpha a barrier or message latency, beta seconds per byte copied/read.
    {"shm_lines", C::allreduce, kShm, false, lines, lines, shm_allreduce_lines, nullptr,
     "alpha + P n beta (in 64-byte lines)"},
    {"shm_low_latency", C::allreduce, kShm, false, low_latency, up_to_low_latency,
     shm_allreduce_low_latency, nullptr, "alpha + P n beta"},
    {"shm_shared", C::allreduce, kShm, true, shared, always, shm_allreduce_shared, nullptr,
     "2 alpha + 2 n beta"},
    {"shm_one_barrier", C::allreduce, kShm, false, one_barrier, fits_a_slot,
     shm_allreduce_one_barrier, nullptr, "alpha + (P+1) n beta"},
    // Rounds of one barrier instead of two. Never chosen: on the benchmark VM (2 ranks, load
    // ~21, alternating runs) it ran 0.87-1.09x shm_staged's rate from 4 to 256 MiB
    // (docs/benchmarks.md, "Large ordinary buffers"): memory traffic, not barriers, costs there.
    {"shm_pipelined", C::allreduce, kShm, false, never, always, shm_allreduce_pipelined, nullptr,
     "alpha per slot round + 3 n beta"},
    {"shm_staged", C::allreduce, kShm, false, always, always, shm_allreduce_staged, nullptr,
     "2 alpha per slot round + 3 n beta"},
    {"shm_reduce", C::reduce, kShm, false, always, always, shm_reduce_as_allreduce, nullptr,
     "that of the all-reduce chosen"},
    {"shm_broadcast", C::broadcast, kShm, false, always, always, shm_broadcast_staged, nullptr,
     "alpha per slot round + 2 n beta"},
    {"shm_allgather_shared", C::allgather, kShm, true, shared, always, shm_allgather_shared,
     nullptr, "2 alpha + P n beta"},
    {"shm_allgather", C::allgather, kShm, false, always, always, shm_allgather_staged, nullptr,
     "alpha per slot round + (P+1) n beta"},
    {"shm_reduce_scatter_shared", C::reduce_scatter, kShm, true, shared, always,
     shm_reduce_scatter_shared, nullptr, "2 alpha + n beta"},
    {"shm_reduce_scatter", C::reduce_scatter, kShm, false, always, always,
     shm_reduce_scatter_staged, nullptr, "alpha per slot round + 2 n beta"},
    {"shm_barrier", C::barrier, kShm, false, always, always, shm_barrier, nullptr, "alpha"},
    {"doubling", C::allreduce, kPairs, false, doubling, always, nullptr, allreduce_doubling,
     "ceil(log2 P) (alpha + n beta)"},
    {"ring", C::allreduce, kPairs, false, always, always, nullptr, allreduce_ring,
     "2 (P-1) alpha + 2 (P-1)/P n beta"},
    {"reduce_broadcast", C::allreduce, kPairs, false, never, always, nullptr,
     allreduce_reduce_broadcast, "2 ceil(log2 P) (alpha + n beta)"},
};

bool is_mode(std::string_view s) {
  return s.empty() || s == "auto" || s == "flat" || s == "hierarchical";
}

std::string row_names() {
  std::string all;
  for (const Row& r : kRows) all += str_cat(all.empty() ? "" : ", ", r.name);
  return all;
}

}  // namespace

std::string_view collective_name(Collective c) {
  constexpr std::array<std::string_view, kCollectives> names = {
      "allreduce", "reduce", "broadcast", "allgather", "reduce_scatter", "barrier"};
  return names[size_t(c)];
}

std::span<const Row> rows() {
  return kRows;
}

const Row* find_row(std::string_view name) {
  for (const Row& r : kRows)
    if (name == r.name) return &r;
  return nullptr;
}

bool known_algorithm(std::string_view forced) {
  return is_mode(forced) || find_row(forced);
}

Plan::Plan(Path path, const Facts& facts, std::string_view forced) {
  if (!known_algorithm(forced))
    LOCKSTEP_THROW(ConfigError, "LOCKSTEP_ALGO (or Options::algorithm)='", forced,
                   "' names no algorithm: use "
                   "auto, flat, hierarchical or a row of docs/collectives.md (",
                   row_names(), ")");
  const Row* pick = is_mode(forced) ? nullptr : find_row(forced);
  auto add = [&](const Row& r, Range bytes) {
    const auto c = size_t(r.collective);
    if (bytes.lo > bytes.hi) return;
    LOCKSTEP_CHECK_LT(counts_[c], kMaxChoices, "too many rows for ", collective_name(r.collective));
    choices_[c][counts_[c]++] = {bytes, r.shared_only, &r};
    if (r.shared_only) shared_min_ = std::min(shared_min_, bytes.lo);
  };
  if (pick && pick->path == path) add(*pick, pick->can(facts));
  for (const Row& r : kRows)
    if (r.path == path) add(r, r.when(facts));
  // Every collective of the path ends with a row that runs every size of every buffer.
  for (int c = 0; c < kCollectives; ++c) {
    if (counts_[c] == 0) continue;  // not on this path
    const Choice& last = choices_[c][counts_[c] - 1];
    LOCKSTEP_CHECK(!last.shared_only && last.bytes.lo == 0 && last.bytes.hi == kMax,
                   "table.cpp: the last row of ", collective_name(Collective(c)), " (",
                   last.row->name, ") must run every size of every buffer");
  }
}

PairAllreduceFn Plan::pair_allreduce(size_t bytes) const {
  for (const Choice& ch : choices(Collective::allreduce))
    if (ch.row->pairs && ch.bytes.contains(bytes)) return ch.row->pairs;
  LOCKSTEP_THROW(InternalError, "table.cpp: no pair all-reduce row for ", bytes,
                 " bytes (the plan was not made for path pairs)");
}

PairAllreduceFn choose_pair_allreduce(size_t bytes, int world, std::string_view forced) {
  return Plan(Path::pairs, {.world = world}, forced).pair_allreduce(bytes);
}

}  // namespace lockstep::comm::algo
