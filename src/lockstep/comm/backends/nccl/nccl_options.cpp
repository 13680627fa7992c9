#include "lockstep/comm/backends/nccl/nccl_options.h"

#include "lockstep/core/error.h"

namespace lockstep::comm::nccl {

NcclConfig parse_nccl_config(const EnvLookup& lookup) {
  NcclConfig c;
  if (auto v = lookup("LOCKSTEP_NCCL_DEVICE"))
    c.device = parse_env_int("LOCKSTEP_NCCL_DEVICE", *v, 0, 1023);
  if (auto v = lookup("LOCKSTEP_NCCL_BLOCKING"))
    c.blocking = parse_env_int("LOCKSTEP_NCCL_BLOCKING", *v, 0, 1) == 1;
  if (auto v = lookup("LOCKSTEP_NCCL_POLL_US"))
    c.poll_interval = std::chrono::microseconds(parse_env_int("LOCKSTEP_NCCL_POLL_US", *v, 0, 100000));
  if (auto v = lookup("LOCKSTEP_NCCL_SINGLE_RANK_ENGINE"))
    c.single_rank_engine = parse_env_int("LOCKSTEP_NCCL_SINGLE_RANK_ENGINE", *v, 0, 1) == 1;
  return c;
}

NcclConfig with_options(NcclConfig env, const Options& options) {
  if (const auto* o = dynamic_cast<const NcclOptions*>(options.backend.get()); o && o->device >= 0)
    env.device = o->device;
  return env;
}

int choose_device(const NcclConfig& config, int local_rank, int device_count) {
  if (device_count <= 0)
    LOCKSTEP_THROW(ConfigError, "nccl backend: no CUDA device is visible to this process");
  if (config.device >= 0) {
    if (config.device >= device_count)
      LOCKSTEP_THROW(ConfigError, "LOCKSTEP_NCCL_DEVICE=", config.device, " but only ",
                     device_count, " CUDA device(s) are visible");
    return config.device;
  }
  return local_rank % device_count;
}

store::Bytes exchange_unique_id(store::Store& store, const std::string& key, int rank, int root,
                                const std::function<store::Bytes()>& make_id,
                                size_t expected_size, Millis timeout) {
  store::Bytes id;
  if (rank == root) {
    id = make_id();
    if (id.size() != expected_size)
      LOCKSTEP_THROW(InternalError, "nccl unique id of ", id.size(), " bytes, expected ",
                     expected_size);
    store.set(key, std::span<const uint8_t>(id));
    return id;
  }
  id = store.get(key, timeout);  // TimeoutError names the key when root never publishes
  if (id.size() != expected_size)
    LOCKSTEP_THROW(ProtocolError, "nccl unique id under '", key, "' has ", id.size(),
                   " bytes, expected ", expected_size, " (a stale key or another job's store?)");
  return id;
}

}  // namespace lockstep::comm::nccl
