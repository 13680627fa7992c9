// The harness of the backend conformance suite: which (backend, world) cases this process
// runs, how ranks are made (threads sharing a HashStore, or this process as one rank of an
// mpirun job), deterministic inputs and the serial references every backend is held to.
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/store/store.h"

namespace lockstep::comm::conformance {

struct Case {
  std::string backend;
  int world = 1;
  bool mpi_process = false;  // this process is one rank of an MPI job
};

// Under mpirun with LOCKSTEP_TEST_MPI=1: the one case {"mpi", MPI world size}. Otherwise
// every built backend but mpi (native included) at world sizes 1-4, as thread-per-rank.
std::vector<Case> cases();
std::string case_name(const Case& c);
// gtest prints a case by its name ("gloo_w3").
inline void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

Options test_options(const std::string& name = "conformance",
                     Millis timeout = std::chrono::seconds(60));

// Runs fn(rank, store) on every rank of the case: threads that share one HashStore, or this
// process alone (its MPI rank). The first exception of any rank is rethrown here.
void run_ranks_raw(const Case& c, const std::function<void(int rank, store::Store&)>& fn);
// Same, with a group of the case's backend made on each rank (and destroyed after fn).
void run_ranks(const Case& c, const std::function<void(ProcessGroup&)>& fn,
               const Options& options = test_options());

// --- inputs and references --------------------------------------------------------------

inline const size_t kCounts[] = {0, 1, 37, 50001};  // empty, one, odd, large-ish and unaligned

// Small integers: every sum, product and average is exact (or within one rounding) in every
// dtype, u8 included, for worlds up to 8.
double reduce_input(int rank, size_t i, DType dt, ReduceOp op);
double reduce_reference(int world, size_t i, DType dt, ReduceOp op);
// Distinct per (rank, i), exactly representable in every dtype: for data movement.
double move_input(int rank, size_t i);

std::vector<uint8_t> make_buffer(size_t count, DType dt, const std::function<double(size_t)>& f);
// "" when buf[i] matches want(i) for every i (within the dtype's tolerance), else a
// description of the first mismatch and the number of wrong elements.
std::string compare(const void* buf, size_t count, DType dt, const std::function<double(size_t)>& want);

}  // namespace lockstep::comm::conformance
