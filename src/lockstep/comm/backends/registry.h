// The backends on existing engines (mpi, gloo, nccl) that this build holds, and the one call
// that makes them available to ProcessGroup::create(). Call register_builtin_backends() once
// early in main (or in a test's setup); it is idempotent and thread-safe. An explicit call,
// not a static initialiser, so that linking lockstep_backends statically never drops a backend.
//
// In a shared build each backend is a plugin, liblockstep_backend_<name>.so, opened with dlopen
// the first time it is asked for (so a program that never uses mpi, gloo or nccl loads none of
// their libraries). Plugins are looked for in the folders of LOCKSTEP_BACKEND_PATH (colon-
// separated) when it is set, otherwise in <folder of liblockstep_backends.so>/lockstep/. A
// static build links the backends in (plugin.h).
//
//   lockstep::comm::register_builtin_backends();
//   auto pg = ProcessGroup::create("gloo", store, rank, world);
//   std::cout << lockstep::comm::backends_summary();
#pragma once

#include <string>
#include <vector>

namespace lockstep::comm {

// Registers every backend built (mpi, gloo, nccl, per the CMake options) with ProcessGroup's
// registry. A plugin is loaded only when ProcessGroup::create() first asks for it; one that
// cannot be loaded makes create() throw a ConfigError naming the package to install, the
// folders searched and the loader's error. Safe to call many times from any thread.
void register_builtin_backends();

// Names of the backends built, "native" first: e.g. {"native", "mpi", "gloo"}.
std::vector<std::string> built_backends();

// Names of the backends that work on this machine, "native" first: those built whose plugin
// loads (tries each once; a static build: all those built).
std::vector<std::string> available_backends();

// The folders searched for backend plugins, in order (empty in a static build).
std::vector<std::string> backend_plugin_dirs();

// What `lockstep --version` prints: "backends: native mpi gloo", then one line for each
// backend built but not loadable here (with the loader's error and the package to install),
// one naming those not built, and the plugin folders searched. Loads every plugin once.
std::string backends_summary();

// Why `backend` cannot run a group of `world` ranks in this process's setting ("" when it
// can): not built; its plugin does not load; nccl without a GPU, or with fewer devices than
// ranks on this host; mpi with world > 1 outside an MPI launcher. For tests and benchmarks to
// skip with a reason.
std::string backend_unavailable_reason(const std::string& backend, int world);

}  // namespace lockstep::comm
