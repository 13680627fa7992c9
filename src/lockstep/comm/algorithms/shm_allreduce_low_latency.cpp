// The low-latency all-reduces (rows shm_lines and shm_low_latency): no barrier at all. Each
// rank writes its data into its own low-latency slot behind or beside tags holding the
// operation's epoch (stored after the data, with release semantics); readers poll the tags,
// then every rank folds all slots in rank order (the same order everywhere: every rank ends
// with the same bits).
//  - shm_lines: in lines of 56 bytes of data per 64-byte cache line, each line with its own
//    tag. A reader polls every line's tag, so its polls fetch all lines at once as they are
//    written: one cache-line transfer per peer, not one for a header and then one for the rest.
//  - shm_low_latency: contiguous behind one tag (polling many lines while the writer fills
//    them makes them bounce between the cores).
// Two halves alternate by epoch, so no barrier is needed: a rank rewrites half h for epoch
// e + 2 only after finishing epoch e + 1, which needed every peer's epoch e + 1 data, which a
// peer writes only after it finished reading epoch e from half h.
// Sleeping peers are woken only after this rank's own wait (or before it sleeps in it): the
// wake needs a full fence after the tag store, and a fence right after it would stall until
// the peer gave up the tag's cache line — a whole line transfer, a third of the operation.
// Later is soon enough: a sleeper waits for every rank, so it cannot go on before the last
// one publishes, and the last one's wait ends at once and rings.
#include <algorithm>
#include <cstring>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {
namespace {

using shm::ShmGroup;

template <bool kInLines>
void low_latency(ShmGroup& g, shm::ShmOp& o) {
  constexpr size_t kLineData = ShmGroup::kLineData;
  void* data = o.out;
  const size_t bytes = o.bytes;
  // At least one line, so that every operation publishes a tag and waits for the peers' (an
  // empty one that did not let a rank run two epochs ahead and overwrite a tag a slow peer
  // still waited for: comm_algorithm_table_test, shm_lines, count 0).
  const size_t lines = kInLines ? std::max<size_t>(1, (bytes + kLineData - 1) / kLineData) : 0;
  const int me = g.rank(), world = g.world();
  const uint64_t e = g.next_ll_epoch();
  const int half = int(e & 1);
  std::byte* mine = g.ll_slot(me, half);
  auto* src = static_cast<const std::byte*>(data);
  if constexpr (kInLines) {
    for (size_t i = 0; i < lines; ++i) {
      std::memcpy(mine + i * 64, src + i * kLineData, std::min(kLineData, bytes - i * kLineData));
      g.ll_tag(me, half, i).store(e, std::memory_order_release);
    }
  } else {
    std::memcpy(mine + ShmGroup::kLinesRegion + ShmGroup::kTagBytes, data, bytes);
    g.ll_head_tag(me, half).store(e, std::memory_order_release);
  }
  auto arrived = [&g, e, half, lines](int r) {
    if constexpr (!kInLines) {
      return g.ll_head_tag(r, half).load(std::memory_order_acquire) == e;
    } else {
      bool all_lines = true;  // no early exit: every line's load is issued in the same poll
      for (size_t i = 0; i < lines; ++i)
        all_lines &= g.ll_tag(r, half, i).load(std::memory_order_acquire) == e;
      return all_lines;
    }
  };
  auto all = [&arrived, me, world] {
    for (int r = 0; r < world; ++r)
      if (r != me && !arrived(r)) return false;
    return true;
  };
  g.wait_until(
      g.ll_bell(), all, [&](int r) { return !arrived(r); }, o.info, o.dl,
      "a low-latency all-reduce", &g.ll_bell());
  g.ll_bell().notify_sleepers();
  const void** srcs = g.sources();
  for (int r = 0; r < world; ++r) {
    const std::byte* theirs = g.ll_slot(r, half);
    if (r == me) {
      srcs[r] = data;
    } else if (!kInLines) {
      srcs[r] = theirs + ShmGroup::kLinesRegion + ShmGroup::kTagBytes;
    } else if (lines == 1) {
      srcs[r] = theirs;  // contiguous within the first line
    } else {
      std::byte* out = g.ll_gather(r);
      for (size_t i = 0; i < lines; ++i)
        std::memcpy(out + i * kLineData, theirs + i * 64,
                    std::min(kLineData, bytes - i * kLineData));
      srcs[r] = out;
    }
  }
  reduce_many_finish(data, nullptr, srcs, world, o.count, o.dt, o.op, world, true, o.nonfinite);
}

}  // namespace

void shm_allreduce_lines(ShmGroup& g, shm::ShmOp& o) {
  low_latency<true>(g, o);
}
void shm_allreduce_low_latency(ShmGroup& g, shm::ShmOp& o) {
  low_latency<false>(g, o);
}

}  // namespace lockstep::comm::algo
