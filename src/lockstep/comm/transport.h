// Transport: what collective algorithms see of the network — ordered, tagged byte messages
// between pairs of ranks (as Gloo's pair). Algorithms post sends and receives and wait for
// them; they never see sockets or shared memory.
//
//   auto rx = t.post_recv(left, tag, scratch, bytes);
//   t.post_send(right, tag, data, bytes);
//   t.wait(rx, deadline, info);          // progresses every posted request until rx is done
//   t.wait_all(deadline, info);
//
// Messages between two ranks arrive in the order they were posted; a receive must match the
// next message from its peer in tag and size, or the wait throws ProtocolError. Buffers must
// stay valid until their request completes. After any error the transport is broken: every
// later call throws, naming the first error.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lockstep/comm/types.h"
#include "lockstep/core/clock.h"

namespace lockstep::comm {

using RequestId = uint64_t;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* name() const = 0;

  virtual RequestId post_send(int peer, uint64_t tag, const void* data, size_t bytes) = 0;
  virtual RequestId post_recv(int peer, uint64_t tag, void* data, size_t bytes) = 0;
  // Progresses all posted requests until `id` completes. Throws PeerError (peer closed, reset,
  // died), TimeoutError (deadline passed: names the peers still pending), AbortedError.
  virtual void wait(RequestId id, Deadline deadline, const OpInfo& info) = 0;
  virtual void wait_all(Deadline deadline, const OpInfo& info) = 0;
  // Thread-safe: fails the current and every later wait with AbortedError.
  virtual void abort() = 0;
};

}  // namespace lockstep::comm
