// Connects a worker to its job's store, from the distributed environment:
//   - LOCKSTEP_STORE_FILE=path        -> FileStore on a shared filesystem;
//   - a single process (WORLD_SIZE=1)  -> an in-process HashStore;
//   - otherwise                        -> TcpStore at MASTER_ADDR:MASTER_PORT with
//     LOCKSTEP_STORE_TOKEN; rank 0 hosts the server itself unless `lockstep run` hosts it
//     (LOCKSTEP_LAUNCHER=1), so mpirun, srun and torchrun-style launches work unchanged.
// Keys are namespaced by LOCKSTEP_STORE_PREFIX when set (the launcher sets one per restart).
#pragma once

#include <memory>

#include "lockstep/core/dist_env.h"
#include "lockstep/store/store.h"

namespace lockstep::store {

std::unique_ptr<Store> connect_store(const DistEnv& env, Millis timeout,
                                     const EnvLookup& lookup = getenv_opt);

}  // namespace lockstep::store
