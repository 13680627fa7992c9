// TcpTransport: a full mesh of TCP connections (one per pair of ranks), addresses exchanged
// through the store. Non-blocking sockets progressed by poll(); each message is framed as
// {tag, bytes} + payload so that a mismatched receive is detected, not misread.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "lockstep/comm/request_table.h"
#include "lockstep/comm/tcp/socket.h"
#include "lockstep/comm/transport.h"
#include "lockstep/store/store.h"

namespace lockstep::comm::tcp {

class TcpTransport final : public Transport {
 public:
  // Rendezvous: publishes this rank's listening address under `prefix`, connects to lower
  // ranks and accepts higher ones, all before `timeout`.
  // on_failure(msg) records this rank's failure for the group and returns the group's first
  // one; it runs before the sockets close, so peers that see the close find the cause.
  using FailureBoard = std::function<std::string(const std::string&)>;
  TcpTransport(store::Store& store, const std::string& prefix, int rank, int size, Millis timeout,
               FailureBoard on_failure = {});
  ~TcpTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "tcp"; }
  RequestId post_send(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestId post_recv(int peer, uint64_t tag, void* data, size_t bytes) override;
  void wait(RequestId id, Deadline deadline, const OpInfo& info) override;
  void wait_all(Deadline deadline, const OpInfo& info) override;
  void abort() override;

 private:
  void connect_mesh(store::Store& store, const std::string& prefix, Deadline deadline);
  template <class Done>
  void progress_until(Done done, Deadline deadline, const OpInfo& info);
  // Moves as many bytes as the socket takes/gives now; true if anything moved.
  bool progress_send(int peer, const OpInfo& info);
  bool progress_recv(int peer, const OpInfo& info);
  void poll_once(Deadline deadline, const OpInfo& info);
  [[noreturn]] void fail_peer(int peer, int err, const char* what, const OpInfo& info);
  [[noreturn]] void fail_timeout(const OpInfo& info);
  void check_usable(const OpInfo& info) const;
  void break_all();  // close every socket so that peers notice at once
  std::string with_first_failure(const std::string& msg);

  int rank_, size_;
  std::vector<Fd> peers_;  // peers_[rank_] is unused
  Fd abort_fd_;            // eventfd: abort() makes poll() return
  std::atomic<bool> aborted_{false};
  std::string broken_;     // first error; non-empty once the transport is unusable
  RequestTable reqs_;
  FailureBoard on_failure_;
};

}  // namespace lockstep::comm::tcp
