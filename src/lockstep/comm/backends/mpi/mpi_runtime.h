// MpiRuntime: MPI_Init_thread(MPI_THREAD_MULTIPLE) once per process, MPI_Finalize at exit
// (only if lockstep initialised MPI), the launch checks, and CHECK_MPI, which turns an MPI
// return code into a lockstep exception naming the call, the rank and the operation.
//
// The mpi backend runs only under an MPI launcher (mpirun/mpiexec, srun): rank and world come
// from MPI_COMM_WORLD. `lockstep run` starts plain processes, and Open MPI singletons cannot
// join each other without an ompi-server and MPI_Comm_connect/accept, so a world > 1 outside
// a launcher is refused with a ConfigError that says how to start the job instead.
#pragma once

#include <mpi.h>

#include <atomic>
#include <string>

#include "lockstep/core/clock.h"

namespace lockstep::comm::mpi {

class MpiRuntime {
 public:
  // Initialises MPI on first use (thread-safe). Throws ConfigError when MPI cannot give
  // MPI_THREAD_MULTIPLE.
  static MpiRuntime& instance();

  int world_rank() const { return rank_; }
  int world_size() const { return size_; }
  int tag_upper_bound() const { return tag_ub_; }
  // True when an MPI launcher (mpirun, srun, hydra) started this process.
  static bool launched_by_mpi();

  ~MpiRuntime();

 private:
  MpiRuntime();
  bool we_initialised_ = false;
  int rank_ = 0, size_ = 1, tag_ub_ = 32767;
};

// Throws the lockstep exception for a failed MPI call (PeerError with the MPI error text).
[[noreturn]] void throw_mpi_error(int rc, const char* call, const std::string& context);

// Polls `req` until it completes, `deadline` passes (TimeoutError) or *aborted turns true
// (AbortedError). Spins briefly, then polls with sched_yield for as long as an operation
// moving `bytes` may reasonably take, then sleeps with a growing backoff so that a rank
// waiting for a late peer leaves the cores to the others. On timeout/abort the request is left
// pending (MPI cannot cancel a collective) and the caller must treat the communicator as
// broken.
void wait_request(MPI_Request& req, const char* call, const std::string& context,
                  Deadline deadline, const std::atomic<bool>* aborted_flag = nullptr,
                  size_t bytes = 0);

}  // namespace lockstep::comm::mpi

// Wraps an MPI call: non-MPI_SUCCESS becomes an exception naming the call and `context`
// (e.g. OpInfo::describe(), which names the operation, its sequence number and the rank).
#define CHECK_MPI(call, context)                                                   \
  do {                                                                             \
    int lockstep_mpi_rc_ = (call);                                                 \
    if (lockstep_mpi_rc_ != MPI_SUCCESS) [[unlikely]]                              \
      ::lockstep::comm::mpi::throw_mpi_error(lockstep_mpi_rc_, #call, (context));  \
  } while (0)
