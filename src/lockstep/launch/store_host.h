// The rendezvous store as hosted by the launcher of node 0: a TcpStoreServer on its own
// thread, bound to the master address, with the job's token.
#pragma once

#include <memory>
#include <string>

#include "lockstep/launch/launcher.h"
#include "lockstep/store/tcp_store_server.h"

namespace lockstep::launch {

// Starts the store when this is node 0; returns null on other nodes.
std::unique_ptr<store::TcpStoreServer> host_store_if_leader(const LaunchConfig& cfg,
                                                            const std::string& token);

// $LOCKSTEP_STORE_TOKEN when set (every node of a multi-node job must share it), else a new
// random token for this job.
std::string getenv_or_make_token();

}  // namespace lockstep::launch
