// The parts of the nccl backend that need neither CUDA nor NCCL, so that they build and are
// tested on every machine: the backend's settings from the environment, and the exchange of
// NCCL's unique id (an opaque 128-byte blob made by rank 0) through the lockstep store.
#pragma once

#include <functional>
#include <string>

#include "lockstep/comm/process_group.h"
#include "lockstep/core/clock.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/store/store.h"

namespace lockstep::comm::nccl {

struct NcclConfig {
  // CUDA device of this rank; -1 = LOCAL_RANK modulo the number of visible devices.
  int device = -1;
  // NCCL's blocking mode. Off by default: non-blocking init, collectives and abort are
  // polled against deadlines, so that a stalled peer can never hang the caller.
  bool blocking = false;
  // Sleep between polls of a running operation (0 = yield only).
  std::chrono::microseconds poll_interval{50};
  // Run a one-rank group through NCCL too (a communicator of one), instead of answering it
  // locally: lets a machine with a single GPU exercise the whole nccl path.
  bool single_rank_engine = false;
};

// What a caller that creates the group itself sets in Options::backend (the environment's
// LOCKSTEP_NCCL_* fill the rest): PyTorch's c10d backend (python/lockstep_torch) names the
// device of the tensors it hands over.
struct NcclOptions : BackendOptions {
  int device = -1;  // -1: the environment's choice (LOCKSTEP_NCCL_DEVICE, else LOCAL_RANK)
};

// `env` with what `options.backend` sets, when it is an NcclOptions.
NcclConfig with_options(NcclConfig env, const Options& options);

// Reads LOCKSTEP_NCCL_DEVICE (int >= 0), LOCKSTEP_NCCL_BLOCKING (0/1),
// LOCKSTEP_NCCL_POLL_US (0..100000) and LOCKSTEP_NCCL_SINGLE_RANK_ENGINE (0/1). Bad values raise ConfigError naming the variable.
NcclConfig parse_nccl_config(const EnvLookup& lookup = getenv_opt);

// The device a rank uses: config.device when set, else local_rank % device_count.
int choose_device(const NcclConfig& config, int local_rank, int device_count);

// Rank `root` calls make_id() and publishes its bytes under `key`; every other rank waits
// (bounded by `timeout`) and reads them. Every rank returns the same bytes, which must be
// `expected_size` long (ProtocolError otherwise: a stale or foreign key).
store::Bytes exchange_unique_id(store::Store& store, const std::string& key, int rank, int root,
                                const std::function<store::Bytes()>& make_id,
                                size_t expected_size, Millis timeout);

}  // namespace lockstep::comm::nccl
