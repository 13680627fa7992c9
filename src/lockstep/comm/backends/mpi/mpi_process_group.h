// MpiProcessGroup: the `mpi` backend. One duplicated communicator per group (RAII), and the
// collectives as non-blocking MPI calls (MPI_Iallreduce, ...) polled on the group's worker
// thread against the operation's deadline and the abort flag. f16/bf16 reductions run in f32
// (MPI has no 16-bit float type); avg is a sum divided by the group size.
//
// Started by mpirun/mpiexec or srun only: rank and world come from MPI_COMM_WORLD and must
// match what the caller passes. The store serves only the flight recorder's reports and
// LOCKSTEP_DEBUG=detail (comm/engine.h): for those the ranks must share it (a TcpStore, or a
// FileStore on a shared path). See mpi_runtime.h for why MPI starts the processes.
#pragma once

#include <mpi.h>

#include <vector>

#include "lockstep/comm/engine.h"
#include "lockstep/comm/backends/mpi/mpi_runtime.h"

namespace lockstep::comm::mpi {

// Owns an MPI communicator; frees it on destruction unless it was left with operations
// pending (after a timeout or abort), in which case it is deliberately leaked.
class Communicator {
 public:
  Communicator() = default;
  explicit Communicator(MPI_Comm c) : comm_(c) {}
  Communicator(Communicator&& o) noexcept : comm_(o.comm_) { o.comm_ = MPI_COMM_NULL; }
  Communicator& operator=(Communicator&&) = delete;
  ~Communicator();
  MPI_Comm get() const { return comm_; }
  void leak() { comm_ = MPI_COMM_NULL; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

class MpiProcessGroup final : public engine::EngineGroup {
 public:
  // Takes ownership of `comm`, whose rank and size become the group's; `store` (may be null)
  // must outlive the group.
  MpiProcessGroup(Communicator comm, Options options, store::Store* store);
  ~MpiProcessGroup() override;

  bool supports(Capability c) const override;

 protected:
  void execute(const engine::Op& op, const OpInfo& info, Deadline deadline) override;
  std::unique_ptr<ProcessGroup> make_subgroup(const std::vector<int>& ranks,
                                              const std::string& name,
                                              Deadline deadline) override;
  std::unique_ptr<engine::Pending> post(const engine::Op& op, const OpInfo& info) override;

 private:
  // Issues one non-blocking call and waits for it (see wait_request).
  void start_and_wait(int rc, MPI_Request& req, const char* call, const OpInfo& info,
                      Deadline deadline, size_t bytes);
  void reduction(const engine::Op& op, const OpInfo& info, Deadline deadline);
  void data_movement(const engine::Op& op, const OpInfo& info, Deadline deadline);

  Communicator comm_;
  int tag_ub_;
  engine::WideBuffer wide_in_, wide_out_;  // f32 staging for f16/bf16 reductions
  std::vector<MPI_Request> orphans_;      // left pending by a timeout/abort: never reused
};

// Rank and size of a communicator (CHECK_MPI'd).
int comm_rank(MPI_Comm c);
int comm_size(MPI_Comm c);

}  // namespace lockstep::comm::mpi
