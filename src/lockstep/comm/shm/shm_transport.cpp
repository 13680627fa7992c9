#include "lockstep/comm/shm/shm_transport.h"

#include <algorithm>
#include <cstring>

#include "lockstep/comm/shm/shm_group.h"
#include "lockstep/core/error.h"

namespace lockstep::comm::shm {
namespace {

constexpr size_t kHeader = sizeof(Request::header);

// Copies n bytes into / out of a ring of `cap` bytes at stream position pos (wrapping).
void ring_write(std::byte* ring, size_t cap, uint64_t pos, const uint8_t* src, size_t n) {
  size_t at = size_t(pos % cap), first = std::min(n, cap - at);
  std::memcpy(ring + at, src, first);
  std::memcpy(ring, src + first, n - first);
}
void ring_read(const std::byte* ring, size_t cap, uint64_t pos, uint8_t* dst, size_t n) {
  size_t at = size_t(pos % cap), first = std::min(n, cap - at);
  std::memcpy(dst, ring + at, first);
  std::memcpy(dst + first, ring, n - first);
}

// Moves k bytes of a request's stream (header, then payload) starting at r.done.
template <class Io>
void stream_io(Request& r, size_t k, Io io) {
  size_t done = r.done;
  if (done < kHeader) {
    size_t h = std::min(k, kHeader - done);
    io(reinterpret_cast<uint8_t*>(r.header) + done, h);
    done += h;
    k -= h;
  }
  if (k > 0) io(r.buf + (done - kHeader), k);
}

}  // namespace

ShmTransport::ShmTransport(ShmGroup& group) : g_(group), reqs_(group.world()) {}

int ShmTransport::rank() const { return g_.rank(); }
int ShmTransport::size() const { return g_.world(); }

RequestId ShmTransport::post_send(int peer, uint64_t tag, const void* data, size_t bytes) {
  return reqs_.add(peer, true, tag, data, bytes);
}

RequestId ShmTransport::post_recv(int peer, uint64_t tag, void* data, size_t bytes) {
  return reqs_.add(peer, false, tag, data, bytes);
}

void ShmTransport::abort() { g_.abort(); }

// Producer side: append as much of the front request as the ring has room for, then ring the
// receiver's doorbell.
bool ShmTransport::progress_send(int peer) {
  RingCtl& rc = g_.ring_ctl(g_.rank(), peer);
  std::byte* ring = g_.ring_data(g_.rank(), peer);
  const size_t cap = g_.ring_bytes();
  bool moved = false;
  while (Request* r = reqs_.front(peer, true)) {
    uint64_t head = rc.head.load(std::memory_order_relaxed);
    size_t space = cap - size_t(head - rc.tail.load(std::memory_order_acquire));
    size_t k = std::min(space, kHeader + r->bytes - r->done);
    if (k == 0) break;
    uint64_t pos = head;
    stream_io(*r, k, [&](uint8_t* p, size_t n) {
      ring_write(ring, cap, pos, p, n);
      pos += n;
    });
    rc.head.store(head + k, std::memory_order_release);
    g_.ctl(peer).doorbell.notify();
    moved = true;
    r->done += k;
    if (r->done == kHeader + r->bytes) reqs_.finish_front(peer, true);
  }
  return moved;
}

// Consumer side: take what has arrived, check the framing against the posted receive, free
// the ring space and ring the sender's doorbell.
bool ShmTransport::progress_recv(int peer, const OpInfo& info) {
  RingCtl& rc = g_.ring_ctl(peer, g_.rank());
  const std::byte* ring = g_.ring_data(peer, g_.rank());
  const size_t cap = g_.ring_bytes();
  bool moved = false;
  while (Request* r = reqs_.front(peer, false)) {
    uint64_t tail = rc.tail.load(std::memory_order_relaxed);
    size_t avail = size_t(rc.head.load(std::memory_order_acquire) - tail);
    size_t want = kHeader + r->bytes - r->done;
    if (r->done < kHeader) want = kHeader - r->done;  // read the header alone, check it first
    size_t k = std::min(avail, want);
    if (k == 0) break;
    uint64_t pos = tail;
    stream_io(*r, k, [&](uint8_t* p, size_t n) {
      ring_read(ring, cap, pos, p, n);
      pos += n;
    });
    rc.tail.store(tail + k, std::memory_order_release);
    g_.ctl(peer).doorbell.notify();
    moved = true;
    r->done += k;
    if (r->done == kHeader && (r->header[0] != r->tag || r->header[1] != r->bytes))
      LOCKSTEP_THROW(ProtocolError, info.describe(), ": message mismatch from rank ", peer,
                     ": expected tag ", r->tag, " with ", r->bytes, " bytes, got tag ",
                     r->header[0], " with ", r->header[1], " bytes; ranks are calling different "
                     "collectives or counts (LOCKSTEP_DEBUG=detail names the first mismatch)");
    if (r->done == kHeader + r->bytes) reqs_.finish_front(peer, false);
  }
  return moved;
}

bool ShmTransport::progress_all(const OpInfo& info) {
  bool moved = false;
  for (int p = 0; p < g_.world(); ++p) {
    if (p == g_.rank()) continue;
    if (reqs_.has_pending(p, true)) moved |= progress_send(p);
    if (reqs_.has_pending(p, false)) moved |= progress_recv(p, info);
  }
  return moved;
}

bool ShmTransport::can_progress() const {
  const int me = g_.rank();
  for (int p = 0; p < g_.world(); ++p) {
    if (p == me) continue;
    if (reqs_.has_pending(p, true)) {
      RingCtl& rc = g_.ring_ctl(me, p);
      if (rc.head.load(std::memory_order_relaxed) - rc.tail.load(std::memory_order_acquire) <
          g_.ring_bytes())
        return true;
    }
    if (reqs_.has_pending(p, false)) {
      RingCtl& rc = g_.ring_ctl(p, me);
      if (rc.head.load(std::memory_order_acquire) != rc.tail.load(std::memory_order_relaxed))
        return true;
    }
  }
  return false;
}

template <class Done>
void ShmTransport::progress_until(Done done, Deadline deadline, const OpInfo& info) {
  g_.check_usable(info);
  while (!done()) {
    if (progress_all(info)) continue;
    g_.wait_until(g_.ctl(g_.rank()).doorbell, [&] { return can_progress(); },
                  [&](int r) { return reqs_.has_pending(r, true) || reqs_.has_pending(r, false); },
                  info, deadline, "a point-to-point transfer");
  }
}

void ShmTransport::wait(RequestId id, Deadline deadline, const OpInfo& info) {
  progress_until([&] { return reqs_.is_complete(id); }, deadline, info);
}

void ShmTransport::wait_all(Deadline deadline, const OpInfo& info) {
  progress_until([&] { return reqs_.pending() == 0; }, deadline, info);
}

}  // namespace lockstep::comm::shm
