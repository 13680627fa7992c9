// The native algorithms as one table (table.cpp). A row names an algorithm, the collective it
// performs, the data path it runs on, and when it is chosen: a byte range and a world-size
// condition (resolved once per group from that group's facts), and whether the buffer must
// lie in alloc_shared blocks. A group consults its collective's rows in order; the first that
// fits runs. LOCKSTEP_ALGO (Options::algorithm) may name a row: that row then comes first for
// every size it can run, and the other rows stay behind it for the sizes it cannot.
//
// Two data paths:
//  - shm: a ShmGroup's staging slots, low-latency lines and shared blocks, through ShmGroup's
//    primitives (shm_*.cpp here). The path of every group whose ranks share one host.
//  - pairs: any Transport's tagged send/recv (algorithms.h): tcp groups.
// Adding an algorithm: one file with its function, one row in table.cpp (docs/collectives.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "lockstep/comm/types.h"
#include "lockstep/core/dtype.h"

namespace lockstep::comm {
namespace shm {
class ShmGroup;
struct ShmOp;
}  // namespace shm
namespace algo {
struct Ctx;

enum class Collective : uint8_t {
  allreduce,
  reduce,
  broadcast,
  allgather,
  reduce_scatter,
  barrier
};
inline constexpr int kCollectives = 6;
std::string_view collective_name(Collective c);

enum class Path : uint8_t { shm, pairs };

// What the choice may depend on, known when the group is made.
struct Facts {
  int world = 1;
  int cores = 1;          // std::thread::hardware_concurrency()
  bool yielding = false;  // shm waits poll between sched_yield()s first (more ranks than cores)
  size_t slot_bytes = 0;  // shm: staging bytes per rank per half-slot
};

// Sizes lo <= bytes <= hi (bytes: this rank's input, as the row's collective counts it). An
// empty range (lo > hi) means never.
struct Range {
  size_t lo = 0, hi = SIZE_MAX;
  bool contains(size_t b) const { return lo <= b && b <= hi; }
};
inline constexpr Range kNever{1, 0};

using ShmFn = void (*)(shm::ShmGroup&, shm::ShmOp&);
using PairAllreduceFn = void (*)(Ctx&, void* data, size_t count, DType dt, ReduceOp op);

struct Row {
  const char* name;
  Collective collective;
  Path path;
  bool shared_only;             // the buffer must lie in alloc_shared blocks (shm)
  Range (*when)(const Facts&);  // chosen by default for these sizes (kNever: only when forced)
  Range (*can)(const Facts&);   // what it can run at all, when forced
  ShmFn shm;                    // path shm
  PairAllreduceFn pairs;  // path pairs (all-reduce; other pair collectives have one algorithm)
  const char* cost;       // alpha-beta cost (docs/collectives.md lists it)
};

std::span<const Row> rows();
const Row* find_row(std::string_view name);
// Whether `forced` is a value LOCKSTEP_ALGO accepts: auto, flat, hierarchical, or a row name.
bool known_algorithm(std::string_view forced);

// The table resolved for one group: per collective, the rows of its path that can fit, with
// their byte ranges as numbers (no function call, allocation or string compare per operation).
class Plan {
 public:
  struct Choice {
    Range bytes;
    bool shared_only;
    const Row* row;
  };
  static constexpr int kMaxChoices = 8;

  Plan() = default;  // no rows
  // Throws ConfigError when `forced` is not known_algorithm(), or when a collective of `path`
  // has no row that runs every size.
  Plan(Path path, const Facts& facts, std::string_view forced);

  std::span<const Choice> choices(Collective c) const {
    const auto i = size_t(c);
    return {choices_[i], size_t(counts_[i])};
  }
  // The smallest size any shared-only row takes: below it no buffer is looked up in the blocks.
  size_t shared_min() const { return shared_min_; }
  // Path pairs: the all-reduce of the first row whose range holds `bytes`.
  PairAllreduceFn pair_allreduce(size_t bytes) const;

 private:
  Choice choices_[kCollectives][kMaxChoices] = {};
  int counts_[kCollectives] = {};
  size_t shared_min_ = SIZE_MAX;
};

// The pair-transport all-reduce for `bytes` on `world` ranks: the forced row when it names a
// pair all-reduce, else the first row whose range holds `bytes`. Resolves a Plan per call:
// a group keeps its Plan(Path::pairs, ...) and asks it instead.
PairAllreduceFn choose_pair_allreduce(size_t bytes, int world, std::string_view forced);

}  // namespace algo
}  // namespace lockstep::comm
