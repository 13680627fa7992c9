// The mpi backend's entry point (plugin.h): liblockstep_backend_mpi.so, or built in.
#include "lockstep/comm/backends/factories.h"
#include "lockstep/comm/backends/plugin.h"

namespace {

std::string mpi_unavailable_reason(int world) {
  if (world > 1 && !lockstep::comm::mpi_launched())
    return "the mpi backend runs only under an MPI launcher (mpirun -n N, srun)";
  return "";
}

}  // namespace

LOCKSTEP_BACKEND_ENTRY(mpi, lockstep::comm::make_mpi_group, mpi_unavailable_reason)
