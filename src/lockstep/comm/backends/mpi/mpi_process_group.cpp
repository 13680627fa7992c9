#include "lockstep/comm/backends/mpi/mpi_process_group.h"

#include "lockstep/comm/backends/factories.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {

std::unique_ptr<ProcessGroup> make_mpi_group(store::Store& store, int rank, int world,
                                             const Options& options) {
  using mpi::MpiRuntime;
  if (world > 1 && !MpiRuntime::launched_by_mpi())
    LOCKSTEP_THROW(ConfigError, "the mpi backend needs its ", world, " processes started by an "
                   "MPI launcher (mpirun -n ", world, " ... --backend mpi, or srun); processes "
                   "started otherwise (e.g. by `lockstep run`) cannot form one MPI job. Use "
                   "`--backend native` or `gloo` there.");
  auto& rt = MpiRuntime::instance();
  if (rt.world_size() != world || rt.world_rank() != rank)
    LOCKSTEP_THROW(ConfigError, "mpi backend: asked for rank ", rank, " of ", world,
                   " but MPI placed this process at rank ", rt.world_rank(), " of ",
                   rt.world_size(), " (check RANK/WORLD_SIZE against the mpirun command)");
  const std::string ctx = str_cat("mpi group '", options.group_name, "' creation (rank ", rank, ")");
  // Every rank arrives (bounded by the timeout) before the blocking MPI_Comm_dup.
  MPI_Request req = MPI_REQUEST_NULL;
  CHECK_MPI(MPI_Ibarrier(MPI_COMM_WORLD, &req), ctx);
  mpi::wait_request(req, "MPI_Ibarrier", ctx, Deadline::after(options.timeout));
  MPI_Comm dup = MPI_COMM_NULL;
  CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &dup), ctx);
  return std::make_unique<mpi::MpiProcessGroup>(mpi::Communicator(dup), options, &store);
}

bool mpi_launched() { return mpi::MpiRuntime::launched_by_mpi(); }

namespace mpi {

Communicator::~Communicator() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

int comm_rank(MPI_Comm c) {
  int r = 0;
  CHECK_MPI(MPI_Comm_rank(c, &r), "MPI_Comm_rank");
  return r;
}

int comm_size(MPI_Comm c) {
  int s = 0;
  CHECK_MPI(MPI_Comm_size(c, &s), "MPI_Comm_size");
  return s;
}

MpiProcessGroup::MpiProcessGroup(Communicator comm, Options options, store::Store* store)
    : EngineGroup("mpi", comm_rank(comm.get()), comm_size(comm.get()), std::move(options)),
      comm_(std::move(comm)),
      tag_ub_(MpiRuntime::instance().tag_upper_bound()) {
  CHECK_MPI(MPI_Comm_set_errhandler(comm_.get(), MPI_ERRORS_RETURN), "mpi group creation");
  if (store) attach_store(*store);
  start_worker();
}

MpiProcessGroup::~MpiProcessGroup() {
  stop_worker();
  // A communicator with a collective left pending must not be freed under MPI's feet.
  if (!orphans_.empty()) comm_.leak();
}

bool MpiProcessGroup::supports(Capability c) const {
  switch (c) {
    case Capability::send_recv:
    case Capability::sub_groups:
    case Capability::abort: return true;
    case Capability::debug_checks: return attached_store() != nullptr;  // EngineGroup's OpMonitor
    case Capability::shared_memory:
    case Capability::device_memory: return false;
  }
  return false;
}

std::unique_ptr<ProcessGroup> MpiProcessGroup::make_subgroup(const std::vector<int>& ranks,
                                                             const std::string& name,
                                                             Deadline deadline) {
  int index = -1;
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] == rank()) index = int(i);
  const std::string ctx = str_cat("mpi sub-group '", name, "' creation (rank ", rank(), ")");
  // Bound the wait for late ranks first, so that the blocking split cannot hang.
  MPI_Request req = MPI_REQUEST_NULL;
  CHECK_MPI(MPI_Ibarrier(comm_.get(), &req), ctx);
  wait_request(req, "MPI_Ibarrier", ctx, deadline, abort_flag());
  MPI_Comm sub = MPI_COMM_NULL;
  CHECK_MPI(MPI_Comm_split(comm_.get(), index >= 0 ? 0 : MPI_UNDEFINED, index, &sub), ctx);
  if (index < 0) return nullptr;
  Options o = options();
  o.group_name = name;
  return std::make_unique<MpiProcessGroup>(Communicator(sub), o, attached_store());
}

}  // namespace mpi
}  // namespace lockstep::comm
