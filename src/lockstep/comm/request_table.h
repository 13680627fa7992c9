// RequestTable: bookkeeping shared by transports — posted requests by id, and per peer the
// FIFO of pending sends and receives (messages between two ranks are ordered).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "lockstep/comm/transport.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {

struct Request {
  int peer = -1;
  bool is_send = false;
  uint64_t tag = 0;
  uint8_t* buf = nullptr;
  size_t bytes = 0;
  size_t done = 0;  // bytes moved so far, framing included
  bool complete = false;
  uint64_t header[2] = {0, 0};  // framing: tag, payload bytes
};

class RequestTable {
 public:
  explicit RequestTable(int world) : sends_(world), recvs_(world) {}

  RequestId add(int peer, bool is_send, uint64_t tag, const void* buf, size_t bytes) {
    LOCKSTEP_CHECK(peer >= 0 && peer < int(sends_.size()), "peer ", peer, " out of range");
    if (pending_ == 0) {  // everything finished: recycle the table
      base_ += reqs_.size();
      reqs_.clear();
    }
    Request r;
    r.peer = peer;
    r.is_send = is_send;
    r.tag = tag;
    r.buf = static_cast<uint8_t*>(const_cast<void*>(buf));
    r.bytes = bytes;
    r.header[0] = tag;
    r.header[1] = bytes;
    reqs_.push_back(r);
    (is_send ? sends_ : recvs_)[peer].push_back(reqs_.size() - 1);
    ++pending_;
    return base_ + reqs_.size() - 1;
  }

  bool is_complete(RequestId id) const {
    return id < base_ || reqs_.at(id - base_).complete;
  }
  Request* front(int peer, bool is_send) {
    auto& q = (is_send ? sends_ : recvs_)[peer];
    return q.empty() ? nullptr : &reqs_[q.front()];
  }
  void finish_front(int peer, bool is_send) {
    auto& q = (is_send ? sends_ : recvs_)[peer];
    reqs_[q.front()].complete = true;
    q.pop_front();
    --pending_;
  }
  size_t pending() const { return pending_; }
  int world() const { return int(sends_.size()); }
  bool has_pending(int peer, bool is_send) const {
    return !(is_send ? sends_ : recvs_)[peer].empty();
  }

 private:
  std::vector<Request> reqs_;
  std::vector<std::deque<size_t>> sends_, recvs_;
  RequestId base_ = 0;
  size_t pending_ = 0;
};

}  // namespace lockstep::comm
