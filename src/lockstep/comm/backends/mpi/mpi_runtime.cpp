#include "lockstep/comm/backends/mpi/mpi_runtime.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "lockstep/core/error.h"

namespace lockstep::comm::mpi {

bool MpiRuntime::launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                        "MPI_LOCALNRANKS", "SLURM_STEP_ID"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

MpiRuntime& MpiRuntime::instance() {
  // Function-local static: constructed once (thread-safe), MPI_Finalize in its destructor at
  // exit, after every group (which must not outlive main) has freed its communicator.
  static MpiRuntime rt;
  return rt;
}

MpiRuntime::MpiRuntime() {
  int initialised = 0;
  CHECK_MPI(MPI_Initialized(&initialised), "MPI start-up");
  int provided = 0;
  if (initialised) {
    CHECK_MPI(MPI_Query_thread(&provided), "MPI start-up");
  } else {
    CHECK_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI start-up");
    we_initialised_ = true;
  }
  // Errors come back as return codes (CHECK_MPI) instead of aborting the job.
  CHECK_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI start-up");
  if (provided < MPI_THREAD_MULTIPLE)
    LOCKSTEP_THROW(ConfigError, "the mpi backend needs MPI_THREAD_MULTIPLE (each group runs "
                   "its collectives on its own thread) but this MPI provides only level ",
                   provided, "; use an MPI built with thread support (Open MPI >= 3 is)");
  CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI start-up");
  CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI start-up");
  void* ub = nullptr;
  int flag = 0;
  CHECK_MPI(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag), "MPI start-up");
  if (flag && ub) tag_ub_ = *static_cast<int*>(ub);
}

MpiRuntime::~MpiRuntime() {
  if (!we_initialised_) return;
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (!finalised) MPI_Finalize();
}

void throw_mpi_error(int rc, const char* call, const std::string& context) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) text[0] = '\0';
  throw PeerError(-1, call, str_cat(context, ": ", call, " failed: ", text, " (MPI error ", rc, ")"));
}

void wait_request(MPI_Request& req, const char* call, const std::string& context,
                  Deadline deadline, const std::atomic<bool>* aborted_flag, size_t bytes) {
  using namespace std::chrono;
  // Progress in Open MPI's shared-memory transport happens inside MPI_Test (each fragment of
  // a large message needs both sides to poll), so poll hot for the first 100 us, then with
  // sched_yield (full speed on idle cores, fair when ranks oversubscribe them) for 20 ms plus
  // the time the data takes at 20 MB/s, and only then sleep, with naps of at most 500 us.
  const auto start = Clock::now();
  const auto yield_for = milliseconds(20) + nanoseconds(bytes * 50);
  auto nap = microseconds(20);
  for (;;) {
    int flag = 0;
    CHECK_MPI(MPI_Test(&req, &flag, MPI_STATUS_IGNORE), context);
    if (flag) return;
    if (aborted_flag && aborted_flag->load(std::memory_order_acquire))
      LOCKSTEP_THROW(AbortedError, context, ": aborted while in ", call);
    if (deadline.expired())
      LOCKSTEP_THROW(TimeoutError, context, ": ", call, " did not complete within the timeout; "
                     "a peer may be slow, stopped or calling a different collective");
    const auto waited = Clock::now() - start;
    if (waited < microseconds(100)) continue;
    if (waited < yield_for) {
      sched_yield();
      continue;
    }
    std::this_thread::sleep_for(nap);
    nap = std::min<microseconds>(nap * 2, microseconds(500));
  }
}

}  // namespace lockstep::comm::mpi
