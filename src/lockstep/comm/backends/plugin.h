// The seam between lockstep_backends and the backends on existing engines. Each backend's
// glue file (mpi/mpi_plugin.cpp, gloo/gloo_plugin.cpp, nccl/nccl_plugin.cpp) defines one
// extern "C" function, lockstep_backend_<name>(), that returns its BackendPlugin. In a shared
// build (BUILD_SHARED_LIBS=ON, the default) each backend is a plugin,
// <libdir>/lockstep/liblockstep_backend_<name>.so, which registry.cpp opens with dlopen the
// first time the backend is asked for; in a static build the backends are linked into
// lockstep_backends and registry.cpp calls the same functions directly.
//
// Host and plugin come from one build: registry.cpp refuses a plugin whose `abi` or `version`
// differ from its own before it uses anything else in the table.
#pragma once

#include <memory>
#include <string>

#include "lockstep/comm/process_group.h"
#include "lockstep/config.h"

namespace lockstep::comm {

inline constexpr int kBackendPluginAbi = 1;

struct BackendPlugin {
  int abi;              // kBackendPluginAbi of the build that made the plugin
  const char* version;  // LOCKSTEP_VERSION of that build
  const char* name;     // "mpi", "gloo", "nccl"
  std::unique_ptr<ProcessGroup> (*make_group)(store::Store& store, int rank, int world,
                                              const Options& options);
  // Why this backend cannot run a group of `world` ranks in this process ("" when it can).
  std::string (*unavailable_reason)(int world);
};

}  // namespace lockstep::comm

// Defines backend NAME's entry point, lockstep_backend_NAME(), in its glue file.
#define LOCKSTEP_BACKEND_ENTRY(NAME, MAKE_GROUP, UNAVAILABLE_REASON)                       \
  extern "C" const lockstep::comm::BackendPlugin* lockstep_backend_##NAME() {              \
    static const lockstep::comm::BackendPlugin plugin{lockstep::comm::kBackendPluginAbi,   \
                                                      LOCKSTEP_VERSION, #NAME, MAKE_GROUP, \
                                                      UNAVAILABLE_REASON};                 \
    return &plugin;                                                                        \
  }

extern "C" {
const lockstep::comm::BackendPlugin* lockstep_backend_mpi();
const lockstep::comm::BackendPlugin* lockstep_backend_gloo();
const lockstep::comm::BackendPlugin* lockstep_backend_nccl();
}
