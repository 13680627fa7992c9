// Pipelined all-reduce (row shm_pipelined, forced only: LOCKSTEP_ALGO=shm_pipelined or
// Options::algorithm): the staged all-reduce of shm_allreduce_staged.cpp in rounds of one
// barrier each instead of two.
//
// The buffer goes through the staging slots in rounds of up to slot_bytes() per rank; round k
// uses half-slot (h0 + k)%2. Slice r of a round (the part rank r reduces) lies at r * stride
// in every rank's half-slot, whatever the round's length, so that the pieces of two rounds
// sharing a half never overlap. Phase k, between barriers k and k+1, does three things on
// every rank:
//  - copy out round k-1: every peer's reduced slice of round k-1 from its slot into my buffer;
//  - reduce round k: fold MY slice from my buffer and every peer's slot (published in phase
//    k-1), store it to my buffer and to my slot's own slice position;
//  - copy in round k+1: the peers' slices of my buffer's round k+1 into my slot.
// Phase -1 is the first copy-in, phase R (after the last round) the last copy-out. So R
// rounds take R+1 barriers (shm_staged takes 2R), and a barrier's skew is spread over three
// copies. Each byte of the buffer is read once (copy-in or reduce) and written once (reduce or
// copy-out). Every rank ends with the same bits: each slice is folded once, in rank order, by
// its owner, and copied by the others.
//
// Why the pieces never collide (half h, shared by rounds k and k+2):
//  - in phase k a rank writes slices r != me of the half of round k+1 (copy-in), while its
//    peers read, in the same phase, slice me of that half (copy-out of round k-1): other
//    positions. Peers read slices r != me of round k+1 only after barrier k+1;
//  - in phase k a rank writes slice me of round k's half (the reduced slice), while its peers
//    read their own slices of that half (reduce of round k): other positions again; they read
//    slice me in phase k+1, after barrier k+1;
//  - the last copy-out (phase R) reads round R-1's half and the next operation's first
//    copy-in writes the other half (next_half() was taken once per round), as after
//    shm_staged's last round.
// The NaN/Inf flag of every rank's slices is posted before the last barrier and read after it;
// a peer rewrites its flag word only after the next operation's first barrier, which waits
// for this rank.
//
// The copy-out stores into the buffer past the caches (non-temporal): its lines were read a
// phase earlier and, at the sizes this row is for, have left the core's L2 since; a cached
// store would read each one back first.
//
// Never chosen by default: on the benchmark VM it did not beat shm_staged (docs/benchmarks.md,
// "Large ordinary buffers").
#include <algorithm>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/shm_group.h"

namespace lockstep::comm::algo {

void shm_allreduce_pipelined(shm::ShmGroup& g, shm::ShmOp& o) {
  const size_t es = dtype_size(o.dt), P = size_t(g.world()), me = size_t(g.rank());
  const size_t count = o.count;
  // Every slice's slot position is a multiple of 64 bytes (es divides 64): whole lines.
  const size_t stride = std::max<size_t>(64, g.slot_bytes() / P / 64 * 64);
  const size_t per_round = stride / es * P, rounds = (count + per_round - 1) / per_round;
  if (rounds == 0) return;  // nothing to reduce, on every rank alike
  // One half per round, as shm_staged takes them: round k's half is (h0 + k) % 2.
  const int h0 = g.next_half();
  for (size_t k = 1; k < rounds; ++k) g.next_half();
  auto* data = static_cast<uint8_t*>(o.out);
  const void** srcs = g.sources();
  // Round k: elements [k * per_round, + len(k)); slice r = [cut(k, r), cut(k, r+1)) of it.
  auto len = [&](size_t k) { return std::min(per_round, count - k * per_round); };
  auto cut = [&](size_t k, size_t r) { return len(k) * r / P; };
  auto bytes = [&](size_t k, size_t r) { return (cut(k, r + 1) - cut(k, r)) * es; };
  auto user = [&](size_t k, size_t r) { return data + (k * per_round + cut(k, r)) * es; };
  auto slot_of = [&](size_t r, size_t k, size_t s) {
    return reinterpret_cast<uint8_t*>(g.slot(int(r), int((size_t(h0) + k) & 1))) + s * stride;
  };
  auto copy_out = [&](size_t k) {  // every peer's reduced slice of round k into my buffer
    for (size_t r = 0; r < P; ++r)
      if (r != me) copy_to_shared(user(k, r), slot_of(r, k, r), bytes(k, r), true);
  };

  const shm::TimedTrial trial(g.tuner(), o.bytes);
  bool mine_bad = false;
  for (size_t k = 0; k <= rounds; ++k) {  // phase k-1, then barrier k
    if (k >= 2) copy_out(k - 2);
    if (k >= 1) {  // reduce round k-1: my slice, into my buffer and my slot
      for (size_t r = 0; r < P; ++r) srcs[r] = r == me ? user(k - 1, me) : slot_of(r, k - 1, me);
      reduce_many_finish(user(k - 1, me), slot_of(me, k - 1, me), srcs, int(P),
                         bytes(k - 1, me) / es, o.dt, o.op, int(P), trial.stream(),
                         o.nonfinite ? &mine_bad : nullptr);
    }
    if (k < rounds)  // copy in round k: the peers' slices of my buffer into my slot
      for (size_t r = 0; r < P; ++r)
        if (r != me) copy_to_shared(slot_of(me, k, r), user(k, r), bytes(k, r), trial.stream());
    // Barrier k; the last one (k == rounds) also exchanges the NaN/Inf flags.
    g.sync_nonfinite(k == rounds ? o.nonfinite : nullptr, mine_bad, o.info, o.dl);
  }
  copy_out(rounds - 1);  // phase R
}

}  // namespace lockstep::comm::algo
