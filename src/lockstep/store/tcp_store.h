// TcpStore: a Store client that talks to a TcpStoreServer over TCP (the role of c10d's
// TCPStore). Rank 0 (or the launcher) runs the server; every worker connects with the shared
// token. Calls on one TcpStore are serialised; give each thread its own TcpStore when
// several threads must block in get/wait at the same time.
//
//   TcpStore store({.host = env.master_addr, .port = env.master_port,
//                   .start_server = env.rank == 0});
//   store.set("addr/" + std::to_string(rank), my_addr);
//   auto peer = store.get("addr/0", std::chrono::seconds(30));
//
// Errors: TimeoutError (names the key(s), host:port), PeerError (the store closed the
// connection: the server exited), ConfigError (wrong token, unresolvable host).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "lockstep/store/net.h"
#include "lockstep/store/store.h"
#include "lockstep/store/tcp_store_server.h"

namespace lockstep::store {

namespace wire {
struct Request;
}

struct TcpStoreOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // with start_server, 0 picks an ephemeral port (see TcpStore::port())
  // Shared secret; nullopt reads $LOCKSTEP_STORE_TOKEN (unset = empty token).
  std::optional<std::string> token;
  // How long to keep retrying (with exponential backoff) until the server accepts us.
  Millis connect_timeout{std::chrono::seconds(60)};
  // Default timeout of get/wait, and the socket timeout of every other call.
  Millis timeout = Store::kDefaultTimeout;
  // Run a TcpStoreServer inside this object (rank 0), bound to host:port.
  bool start_server = false;
};

class TcpStore final : public Store {
 public:
  using Store::get;
  using Store::set;
  using Store::wait;

  // Connects (and starts the server first when asked). Throws TimeoutError when no server
  // answers within connect_timeout, ConfigError when the token is refused.
  explicit TcpStore(TcpStoreOptions opts);
  ~TcpStore() override;

  void set(const std::string& key, std::span<const uint8_t> value) override;
  Bytes get(const std::string& key, Millis timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  Bytes compare_set(const std::string& key, std::span<const uint8_t> expected,
                    std::span<const uint8_t> desired) override;
  bool check(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, Millis timeout) override;
  bool delete_key(const std::string& key) override;
  int64_t num_keys() override;
  void set_within(const std::string& key, std::span<const uint8_t> value, Millis timeout) override;
  bool check_within(const std::vector<std::string>& keys, Millis timeout) override;
  Bytes compare_set_within(const std::string& key, std::span<const uint8_t> expected,
                           std::span<const uint8_t> desired, Millis timeout) override;

  const std::string& host() const { return opts_.host; }
  uint16_t port() const { return opts_.port; }
  // The in-process server when start_server was set, else nullptr.
  TcpStoreServer* server() { return server_.get(); }

 private:
  void connect(const Deadline& dl);
  void hello(const Deadline& dl);
  // One request/response round trip; returns the ok payload or throws the mapped error.
  // `server_wait` is how long the server may park the request (get/wait).
  Bytes call(const wire::Request& req, Millis server_wait);
  net::Io read_frame(Bytes& frame, const Deadline& dl);
  [[noreturn]] void fail_io(net::Io io, const wire::Request& req, Millis budget);
  std::string where() const;

  TcpStoreOptions opts_;
  std::string token_;
  std::unique_ptr<TcpStoreServer> server_;
  std::mutex mu_;
  net::Fd fd_;  // empty after an error: the next call reconnects
};

// Describes keys for error messages: 'a' or 'a', 'b', ... (at most a few, then a count).
std::string describe_keys(const std::vector<std::string>& keys);

}  // namespace lockstep::store
