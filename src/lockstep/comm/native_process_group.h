// NativeProcessGroup: lockstep's own backend, on the engine every backend shares (engine.h:
// queue, inline hand-off, sequence numbers, timeouts, abort, flight recorder, debug checks).
// It provides the execution of one operation: over a Transport (tcp, or shm pairs on one
// host) with the algorithms of algorithms.h, and over the shared-memory fast path for the
// collectives it covers. Created through ProcessGroup::create("native", ...).
//
// Across several hosts with several ranks on some host, all-reduce is hierarchical (see
// Options::algorithm): two sub-groups made once at construction, in the same order on every
// rank, carry it. LOCKSTEP_HOST_ID, where set, replaces hostname + boot id as the host
// identity, so that ranks in different network namespaces of one machine count as hosts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lockstep/comm/algorithms/table.h"
#include "lockstep/comm/engine.h"
#include "lockstep/comm/transport.h"
#include "lockstep/core/buffer.h"

namespace lockstep::comm {

namespace shm {
class ShmGroup;
}

// The native backend's own settings (Options::backend); the environment variables named
// below override the defaults, never a value set here.
struct NativeOptions : BackendOptions {
  // Bytes per rank staged per step in the shared-memory path (0 = default).
  // Env: LOCKSTEP_SHM_CHUNK_BYTES.
  size_t shm_chunk_bytes = 0;
  // How all-reduce stores into the shared staging slots from 256 KiB on: "auto" (default:
  // measured per size class, shm/stream_tuner.h), "on" (non-temporal stores), "off" (ordinary
  // stores). Env: LOCKSTEP_SHM_STREAM.
  std::string shm_stream = "auto";
  // How long a shared-memory wait spins before it sleeps on a futex, in microseconds; -1 =
  // auto (300 when every busy thread has a core, else 0; an operation the group thread runs
  // while its caller computes spins only with a spare core, see spare_core; with more ranks
  // than cores a wait yields its core for up to 100 us before it sleeps). A value set here
  // replaces both: that long busy spinning, no yielding. Env: LOCKSTEP_SHM_SPIN_US.
  int shm_spin_us = -1;
  // Whether the group's thread has a core of its own (ProcessGroup::spare_core): -1 = auto
  // (this rank has at least two CPUs to itself: its affinity, and the host's CPUs divided
  // among the ranks of this group on it), 0 = no (operations of every size wait for their
  // waiter or start_now()), 1 = yes (those above 1 MiB start at once). The same answer sets
  // how long the shared-memory waits of the group's thread spin (shm_spin_us). The sub-groups
  // of the hierarchical all-reduce take their parent's answer. Env: LOCKSTEP_SPARE_CORE.
  int spare_core = -1;
};

class NativeProcessGroup final : public engine::EngineGroup {
 public:
  NativeProcessGroup(store::Store& store, int rank, int world, Options options);
  ~NativeProcessGroup() override;

  bool supports(Capability c) const override;
  // "shm", "tcp" or "none" (world size 1).
  std::string transport_name() const;
  // Ranks of this group on this host (by host identity, Options::host_id / LOCKSTEP_HOST_ID),
  // counted once at creation: the automatic spare_core() divides this host's CPUs among them.
  int ranks_on_host() const { return ranks_on_host_; }
  // The hierarchical all-reduce's sub-groups this rank belongs to: its host's, then the host
  // leaders' where it leads its host; empty unless all-reduce is hierarchical (diagnostics).
  std::vector<const NativeProcessGroup*> hierarchy_groups() const;
  // Shared memory: how long a wait run by the group's thread while its caller computes spins
  // before it sleeps, in ns (shm_spin_us, else 300 us with a spare core, 0 without); 0 for
  // other transports (diagnostics).
  long shm_async_spin_ns() const;
  std::shared_ptr<std::byte[]> alloc_shared(size_t bytes) override;

 protected:
  // One operation: the shared-memory fast path where it covers the collective, else an
  // algorithm over the transport (hierarchical all-reduce across hosts).
  void execute(const engine::Op& op, const OpInfo& info, Deadline deadline) override;
  std::unique_ptr<ProcessGroup> make_subgroup(const std::vector<int>& ranks,
                                              const std::string& name,
                                              Deadline deadline) override;
  void interrupt() override;
  void before_execute(bool on_caller, const TaskState& task) override;
  std::string signature_note(const engine::Op& op) const override;
  bool peer_exited(int p) override;

 private:
  // The sub-groups of the hierarchical all-reduce. group_ranks[i] is the rank in this group
  // of sub-group rank i, to name peers in errors. leaders is null on non-leaders.
  struct SubGroup {
    std::unique_ptr<NativeProcessGroup> pg;
    std::vector<int> group_ranks;
  };
  struct Hierarchy {
    SubGroup local, leaders;
  };

  void rendezvous();
  void share_cores(int ranks_on_host);
  std::vector<std::string> exchange_hosts();
  bool wants_hierarchy(const std::vector<std::string>& hosts) const;
  void build_hierarchy(const std::vector<std::string>& hosts);
  void allreduce_hierarchical(void* data, size_t count, DType dt, ReduceOp op,
                              const OpInfo& info);
  void run_allreduce(const engine::Op& op, const OpInfo& info, Deadline dl);
  void run_reduce(const engine::Op& op, const OpInfo& info, Deadline dl);
  void run_reduce_scatter(const engine::Op& op, const OpInfo& info, Deadline dl);

  store::Store& store_;
  NativeOptions native_;
  std::string prefix_;
  std::unique_ptr<Transport> tcp_;
  Transport* transport_ = nullptr;  // tcp_ or the shm group's pair transport
  std::unique_ptr<shm::ShmGroup> shm_;
  std::unique_ptr<Hierarchy> hier_;  // set when all-reduce is hierarchical
  algo::Plan pair_plan_;  // the table resolved for the pair transport (no shm group)
  AlignedBuffer scratch_, wide_;  // pooled: grown, never shrunk, used by the running thread only
  int shared_allocs_ = 0;  // alloc_shared calls (names their store keys)
  int ranks_on_host_ = 1;
  bool spare_core_ = true;  // decided once, before the shm group is built (share_cores)
};

}  // namespace lockstep::comm
