#include "lockstep/launch/store_host.h"

#include <cerrno>

#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"

namespace lockstep::launch {

std::unique_ptr<store::TcpStoreServer> host_store_if_leader(const LaunchConfig& cfg,
                                                            const std::string& token) {
  if (cfg.node_rank != 0) return nullptr;
  store::TcpStoreServerOptions opts;
  // A single-node job listens on loopback only, whatever --master-addr says.
  opts.host = cfg.nnodes == 1 ? "127.0.0.1" : cfg.master_addr;
  opts.port = uint16_t(cfg.master_port);
  opts.token = token;
  try {
    auto server = std::make_unique<store::TcpStoreServer>(opts);
    server->start();
    return server;
  } catch (const SystemError& e) {
    // The store's error already says what to do about a port in use.
    LOCKSTEP_THROW(ConfigError, "cannot start the rendezvous store on ", opts.host, ":",
                   cfg.master_port, ": ", e.what(),
                   e.error_code() == EADDRNOTAVAIL ? " (--master-addr must be an address of node 0 itself)" : "");
  }
}

std::string getenv_or_make_token() {
  if (auto t = getenv_opt("LOCKSTEP_STORE_TOKEN"); t && !t->empty()) return *t;
  return make_job_token();
}

}  // namespace lockstep::launch
