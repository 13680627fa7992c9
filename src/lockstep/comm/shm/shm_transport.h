// ShmTransport: the Transport interface over shared memory — one single-producer,
// single-consumer byte ring per ordered pair of ranks, framed like tcp ({tag, bytes} then
// payload). Used by the generic algorithms (gather, scatter, alltoall, send/recv) on one host.
#pragma once

#include "lockstep/comm/request_table.h"
#include "lockstep/comm/transport.h"

namespace lockstep::comm::shm {

class ShmGroup;

class ShmTransport final : public Transport {
 public:
  explicit ShmTransport(ShmGroup& group);

  int rank() const override;
  int size() const override;
  const char* name() const override { return "shm"; }
  RequestId post_send(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestId post_recv(int peer, uint64_t tag, void* data, size_t bytes) override;
  void wait(RequestId id, Deadline deadline, const OpInfo& info) override;
  void wait_all(Deadline deadline, const OpInfo& info) override;
  void abort() override;

 private:
  template <class Done>
  void progress_until(Done done, Deadline deadline, const OpInfo& info);
  bool progress_all(const OpInfo& info);
  bool progress_send(int peer);
  bool progress_recv(int peer, const OpInfo& info);
  bool can_progress() const;

  ShmGroup& g_;
  RequestTable reqs_;
};

}  // namespace lockstep::comm::shm
