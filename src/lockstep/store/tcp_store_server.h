// TcpStoreServer: the server side of TcpStore. One epoll loop on one thread serves every
// client; a get/wait on a missing key is parked as a waiter (not a blocked thread) and
// answered when the key is set or its deadline passes, so thousands of waiters cost memory,
// not threads. Clients must present the shared token in their hello.
//
//   TcpStoreServer server({.host = "127.0.0.1", .port = 0, .token = "s3cret"});
//   server.start();                       // serve on a background thread (rank 0), or
//   server.run();                         // serve on this thread until stop() (launcher)
//   publish(server.port());
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "lockstep/core/clock.h"
#include "lockstep/store/admission.h"

namespace lockstep::store {

struct TcpStoreServerOptions {
  std::string host = "127.0.0.1";  // address to bind; "0.0.0.0" for every interface
  uint16_t port = 0;               // 0 = an ephemeral port, see TcpStoreServer::port()
  // Token that clients must present; nullopt reads $LOCKSTEP_STORE_TOKEN (unset = no token).
  std::optional<std::string> token;
  int backlog = 4096;
  // A connection that has not sent a valid hello by then is dropped (slow or stray clients).
  Millis hello_timeout{std::chrono::seconds(10)};
  // Bounds on connections (zeros: from the open-files limit); a pending connection over its
  // bound closes the oldest pending one, so a flood cannot lock the job's workers out.
  ConnectionLimits limits{};
};

class TcpStoreServer {
 public:
  // Binds and listens immediately (so port() is valid and clients may connect); requests
  // are served once start() or run() is called. Throws SystemError if the bind fails.
  explicit TcpStoreServer(TcpStoreServerOptions opts = {});
  // Stops and joins the start() thread; every client then sees the store as closed. With
  // run() on a thread of your own, call stop() and let run() return before destroying.
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  const std::string& host() const;
  uint16_t port() const;

  void start();  // serve on an internal thread
  void run();    // serve on the calling thread until stop()
  // Thread-safe, idempotent and async-signal-safe (a launcher may call it from a SIGTERM
  // handler); wakes the loop, which closes every connection and returns.
  void stop();

  // Counters for tests and diagnostics (approximate while the loop runs).
  struct Stats {
    int64_t connections = 0;  // currently open
    int64_t waiters = 0;      // currently parked get/wait requests
    int64_t dropped = 0;      // connections dropped (protocol violations, no hello, limits)
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Equal-time comparison of secrets: the time taken does not depend on where they differ.
bool constant_time_equal(std::string_view expected, std::string_view given);

}  // namespace lockstep::store
