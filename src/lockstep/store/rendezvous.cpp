#include "lockstep/store/rendezvous.h"

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"
#include "lockstep/store/file_store.h"
#include "lockstep/store/hash_store.h"
#include "lockstep/store/prefix_store.h"
#include "lockstep/store/tcp_store.h"

namespace lockstep::store {
namespace {

std::unique_ptr<Store> connect_base(const DistEnv& env, Millis timeout, const EnvLookup& lookup) {
  if (auto path = lookup("LOCKSTEP_STORE_FILE"); path && !path->empty()) {
    return std::make_unique<FileStore>(*path, timeout);
  }
  bool launched = lookup("LOCKSTEP_LAUNCHER").value_or("") == "1";
  if (env.world_size == 1 && !launched) return std::make_unique<HashStore>();
  TcpStoreOptions o;
  o.host = env.master_addr;
  o.port = uint16_t(env.master_port);
  o.token = lookup("LOCKSTEP_STORE_TOKEN").value_or("");
  o.connect_timeout = timeout;
  o.timeout = timeout;
  // Under mpirun, srun or a torchrun-style launch nobody hosts the store: rank 0 does.
  o.start_server = env.rank == 0 && !launched;
  LOCKSTEP_LOG(debug, "connecting to the store at ", o.host, ":", o.port,
               o.start_server ? " (hosting it)" : "");
  return std::make_unique<TcpStore>(o);
}

}  // namespace

std::unique_ptr<Store> connect_store(const DistEnv& env, Millis timeout,
                                     const EnvLookup& lookup) {
  auto base = connect_base(env, timeout, lookup);
  base->set_timeout(timeout);
  auto prefix = lookup("LOCKSTEP_STORE_PREFIX").value_or("");
  if (prefix.empty()) return base;
  return std::make_unique<PrefixStore>(prefix, std::move(base));
}

}  // namespace lockstep::store
