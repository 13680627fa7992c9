// Factories of the backends on existing engines (internal to lockstep_backends). Each is
// defined only in its backend's file set; registry.cpp names them in `if constexpr` branches
// so that a backend that is not built needs no stub.
#pragma once

#include <memory>

#include "lockstep/comm/process_group.h"

namespace lockstep::comm {

std::unique_ptr<ProcessGroup> make_mpi_group(store::Store& store, int rank, int world,
                                             const Options& options);
std::unique_ptr<ProcessGroup> make_gloo_group(store::Store& store, int rank, int world,
                                              const Options& options);
std::unique_ptr<ProcessGroup> make_nccl_group(store::Store& store, int rank, int world,
                                              const Options& options);

// Defined with their backend, for backend_unavailable_reason().
bool mpi_launched();
int nccl_visible_devices();

}  // namespace lockstep::comm
