#include "lockstep/comm/native_process_group.h"

#include <sched.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <thread>

#include "lockstep/comm/algorithms.h"
#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/comm/shm/segment.h"
#include "lockstep/comm/shm/shm_group.h"
#include "lockstep/comm/tcp/tcp_transport.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/core/log.h"

namespace lockstep::comm {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// The same string on every rank of one host (hostname + boot id), to decide shm vs tcp.
std::string host_identity() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string boot;
  if (FILE* f = std::fopen("/proc/sys/kernel/random/boot_id", "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof buf, f)) boot = buf;
    std::fclose(f);
  }
  return str_cat(host, "/", boot);
}

// The environment's overrides of the backend-neutral options.
Options resolved(Options o) {
  if (o.transport == "auto") o.transport = env_or("LOCKSTEP_TRANSPORT", "auto");
  if (o.algorithm == "auto") o.algorithm = env_or("LOCKSTEP_ALGO", "auto");
  if (env_or("LOCKSTEP_DEBUG", "") == "detail") o.debug_checks = true;
  return o;
}

}  // namespace

NativeProcessGroup::NativeProcessGroup(store::Store& store, int rank, int world, Options options)
    : EngineGroup("native", rank, world, resolved(std::move(options))), store_(store) {
  if (auto* n = dynamic_cast<const NativeOptions*>(this->options().backend.get())) native_ = *n;
  if (native_.shm_spin_us < 0) native_.shm_spin_us = env_int("LOCKSTEP_SHM_SPIN_US", -1, 0, 1 << 30);
  if (native_.shm_chunk_bytes == 0)
    native_.shm_chunk_bytes = size_t(env_int("LOCKSTEP_SHM_CHUNK_BYTES", 0, 4096, 1 << 30));
  if (native_.shm_stream == "auto") native_.shm_stream = env_or("LOCKSTEP_SHM_STREAM", "auto");
  if (native_.shm_stream != "auto" && native_.shm_stream != "on" && native_.shm_stream != "off")
    LOCKSTEP_THROW(ConfigError, "LOCKSTEP_SHM_STREAM (or NativeOptions::shm_stream)='", native_.shm_stream,
                   "': expected auto, on or off");
  if (native_.spare_core < 0) native_.spare_core = env_int("LOCKSTEP_SPARE_CORE", -1, 0, 1);
  attach_store(store_);
  prefix_ = monitor()->prefix();
  if (size() > 1) {
    rendezvous();  // decides spare_core_ too, before it builds a shm group
  } else {
    share_cores(1);
  }
  // A bad LOCKSTEP_ALGO fails here, on every rank, as the shm group's does in rendezvous().
  if (size() > 1 && !shm_) pair_plan_ = algo::Plan(algo::Path::pairs, {.world = size()}, this->options().algorithm);
  set_traits({.run_inline = true, .lazy_wake = true, .finite_check = true, .spare_core = spare_core_});
  start_worker();
}

// Decides, once, whether the group's thread has a core of its own: this rank has two CPUs to
// itself, one for its computation and one for that thread, by its affinity and by the host's
// CPUs divided among the ranks of this group on this host (those on other hosts do not share
// them). Forced by NativeOptions::spare_core / LOCKSTEP_SPARE_CORE.
void NativeProcessGroup::share_cores(int ranks_on_host) {
  ranks_on_host_ = ranks_on_host;
  if (native_.spare_core >= 0) {
    spare_core_ = native_.spare_core == 1;
    return;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  const int mine = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  const int host = int(std::thread::hardware_concurrency());
  spare_core_ = std::min(mine, host / std::max(ranks_on_host, 1)) >= 2;
}

// Every rank's host identity, by rank (through the store).
std::vector<std::string> NativeProcessGroup::exchange_hosts() {
  const std::string mine = !options().host_id.empty() ? options().host_id : env_or("LOCKSTEP_HOST_ID", host_identity());
  store_.set(str_cat(prefix_, "host/", rank()), mine);
  std::vector<std::string> hosts(static_cast<size_t>(size()));
  for (int p = 0; p < size(); ++p)
    hosts[size_t(p)] = p == rank() ? mine : store::to_string(store_.get(str_cat(prefix_, "host/", p), options().timeout));
  return hosts;
}

// Hierarchical when asked, or (auto) when ranks span several hosts and some host runs
// several of them: then the intra-host part can go over shared memory.
bool NativeProcessGroup::wants_hierarchy(const std::vector<std::string>& hosts) const {
  if (options().algorithm == "hierarchical") return true;
  if (options().algorithm != "auto") return false;
  std::map<std::string, int> per_host;
  for (const auto& h : hosts) ++per_host[h];
  if (per_host.size() < 2) return false;
  for (const auto& [h, n] : per_host)
    if (n > 1) return true;
  return false;
}

// Two sub-groups, made in the same order on every rank: this host's ranks (shm, led by its
// lowest rank) and the leaders of all hosts (tcp, hosts ordered by their lowest rank).
void NativeProcessGroup::build_hierarchy(const std::vector<std::string>& hosts) {
  hier_ = std::make_unique<Hierarchy>();
  std::vector<std::string> order;  // hosts by first rank
  for (const auto& h : hosts)
    if (std::find(order.begin(), order.end(), h) == order.end()) order.push_back(h);
  const std::string& mine = hosts[size_t(rank())];
  for (int p = 0; p < size(); ++p)
    if (hosts[size_t(p)] == mine) hier_->local.group_ranks.push_back(p);
  for (const auto& h : order)
    hier_->leaders.group_ranks.push_back(int(std::find(hosts.begin(), hosts.end(), h) - hosts.begin()));
  const size_t host_index = size_t(std::find(order.begin(), order.end(), mine) - order.begin());
  // The sub-groups run on this host beside its other ranks: they take this group's answer to
  // spare_core() (the leaders' group, one rank per host, would count one rank here). A copy:
  // options().backend may be the caller's, shared with other groups.
  auto native = std::make_shared<NativeOptions>(native_);
  native->spare_core = spare_core_ ? 1 : 0;
  auto make = [&](SubGroup& g, const std::string& name, const std::string& transport) {
    Options o = options();
    o.group_name = str_cat(options().group_name, "/", name);
    o.transport = transport;
    o.algorithm = "flat";
    o.backend = native;
    const int sub_rank = int(std::find(g.group_ranks.begin(), g.group_ranks.end(), rank()) - g.group_ranks.begin());
    g.pg = std::make_unique<NativeProcessGroup>(store_, sub_rank, int(g.group_ranks.size()), o);
  };
  make(hier_->local, str_cat("host", host_index), "shm");
  if (hier_->local.group_ranks.front() == rank()) make(hier_->leaders, "leaders", "tcp");
  LOCKSTEP_LOG(debug, "hierarchical all-reduce: ", order.size(), " hosts, ", hier_->local.group_ranks.size(),
                     " ranks on this one", hier_->leaders.pg ? " (leader)" : "");
}

// Picks the transport (shm when every rank shares this host, unless told otherwise) and
// connects it; the store carries the host identities, addresses and segment names. Across
// hosts, all-reduce may also get the sub-groups of the hierarchical algorithm. The host
// identities also count the ranks that share this host's CPUs (share_cores): a tcp group may
// run several ranks on one host too; a shm group runs all of them on it.
void NativeProcessGroup::rendezvous() {
  std::string kind = options().transport;
  if (kind != "auto" && kind != "shm" && kind != "tcp")
    LOCKSTEP_THROW(ConfigError, "unknown transport '", kind, "' (LOCKSTEP_TRANSPORT / "
                   "Options::transport): use auto, shm or tcp");
  std::vector<std::string> hosts;
  if (kind != "shm") hosts = exchange_hosts();
  if (kind == "auto")
    kind = std::all_of(hosts.begin(), hosts.end(), [&](const std::string& h) { return h == hosts[0]; })
               ? "shm" : "tcp";
  share_cores(kind == "shm" ? size()
                            : int(std::count(hosts.begin(), hosts.end(), hosts[size_t(rank())])));
  if (kind == "shm") {
    shm_ = std::make_unique<shm::ShmGroup>(store_, prefix_, rank(), size(), native_.shm_chunk_bytes,
                                           native_.shm_spin_us, spare_core_, options().timeout,
                                           native_.shm_stream == "on"    ? shm::StreamTuner::Mode::kAlways
                                           : native_.shm_stream == "off" ? shm::StreamTuner::Mode::kNever
                                                                      : shm::StreamTuner::Mode::kAuto,
                                           options().algorithm);
    transport_ = &shm_->transport();
  } else {  // tcp
    // Bounded: after a network failure the store may be unreachable too.
    auto board = [this](const std::string& msg) {
      try {
        auto v = store_.compare_set_within(prefix_ + "first_failure", {}, store::to_bytes(msg),
                                           OpMonitor::kDiagnosticsBudget);
        return store::to_string(v);
      } catch (...) {
        monitor()->store_went_silent();  // explain() need not wait for it again
        throw;
      }
    };
    tcp_ = std::make_unique<tcp::TcpTransport>(store_, prefix_, rank(), size(), options().timeout, board);
    transport_ = tcp_.get();
    // Forced tcp stays flat unless hierarchical is asked for (Options::algorithm).
    const bool may_split = options().transport == "auto" || options().algorithm == "hierarchical";
    if (may_split && wants_hierarchy(hosts)) build_hierarchy(hosts);
  }
}

std::vector<const NativeProcessGroup*> NativeProcessGroup::hierarchy_groups() const {
  std::vector<const NativeProcessGroup*> groups;
  if (hier_)
    for (const SubGroup* g : {&hier_->local, &hier_->leaders})
      if (g->pg) groups.push_back(g->pg.get());
  return groups;
}

long NativeProcessGroup::shm_async_spin_ns() const { return shm_ ? shm_->async_spin_ns() : 0; }

// Reduce inside the host over shm to its leader, all-reduce among the leaders over tcp,
// broadcast back inside the host. 16-bit floats arrive widened to f32 (one rounding at the
// end); avg sums all the way and divides once, on the leaders, so every rank ends equal.
void NativeProcessGroup::allreduce_hierarchical(void* data, size_t count, DType dt, ReduceOp op,
                                                const OpInfo& info) {
  const ReduceOp sub_op = op == ReduceOp::avg ? ReduceOp::sum : op;
  auto run = [&](SubGroup& g, const char* step, const std::function<Work()>& call) {
    try {
      call().wait();
    } catch (const PeerError& e) {
      const int peer = e.peer_rank() >= 0 && size_t(e.peer_rank()) < g.group_ranks.size()
                           ? g.group_ranks[size_t(e.peer_rank())] : -1;
      throw PeerError(peer, std::string(op_kind_name(info.kind)),
                      str_cat(info.describe(), " (hierarchical, ", step, "; peer rank ", peer,
                              " of this group): ", e.what()));
    } catch (const TimeoutError& e) {
      throw TimeoutError(str_cat(info.describe(), " (hierarchical, ", step, "): ", e.what()));
    }
  };
  auto& local = *hier_->local.pg;
  run(hier_->local, "reduce inside the host", [&] { return local.reduce(data, count, dt, sub_op, 0); });
  if (hier_->leaders.pg) {
    auto& leaders = *hier_->leaders.pg;
    run(hier_->leaders, "all-reduce among host leaders",
        [&] { return leaders.allreduce(data, count, dt, sub_op); });
    finish_avg(data, count, dt, op, size());
  }
  run(hier_->local, "broadcast inside the host", [&] { return local.broadcast(data, count, dt, 0); });
}

NativeProcessGroup::~NativeProcessGroup() { stop_worker(); }

bool NativeProcessGroup::supports(Capability c) const {
  switch (c) {
    case Capability::send_recv:
    case Capability::sub_groups:
    case Capability::abort:
    case Capability::debug_checks: return true;
    case Capability::shared_memory: return shm_ != nullptr;
    case Capability::device_memory: return false;
  }
  return false;
}

std::string NativeProcessGroup::transport_name() const {
  return transport_ ? transport_->name() : "none";
}

// The engine's abort(), or its destructor with operations queued: fail what runs now.
void NativeProcessGroup::interrupt() {
  if (transport_) transport_->abort();
  if (shm_) shm_->abort();
}

void NativeProcessGroup::before_execute(bool on_caller, const TaskState& task) {
  if (shm_) shm_->set_runner(on_caller, &task);
}

bool NativeProcessGroup::peer_exited(int p) { return shm_ && shm_->peer_dead(p); }

// One segment for all ranks, rank r's block at r * stride; the group's shared-memory path
// knows the blocks while the memory lives. Rank 0 decides whether it fits in /dev/shm (a
// container's is often 64 MiB; pages past its size would kill the rank with SIGBUS), with a
// quarter to spare for the segments other groups and jobs create meanwhile, and every rank
// follows, with ordinary memory otherwise.
std::shared_ptr<std::byte[]> NativeProcessGroup::alloc_shared(size_t bytes) {
  if (!shm_ || size() == 1) return ProcessGroup::alloc_shared(bytes);
  const size_t stride = (std::max<size_t>(bytes, 1) + 4095) / 4096 * 4096;
  const int id = shared_allocs_++;  // the same on every rank: alloc_shared is collective
  const std::string keys = str_cat(prefix_, "shared/", id, "/");
  bool fits = false;
  if (rank() == 0) {
    struct statvfs v {};
    fits = ::statvfs("/dev/shm", &v) == 0 &&
           double(v.f_bavail) * double(v.f_frsize) >= 1.25 * double(stride) * size();
    if (!fits)
      LOCKSTEP_LOG(warn, "alloc_shared in group '", options().group_name, "': ", (stride * size_t(size())) >> 20,
                   " MiB (", size(), " ranks) do not fit in /dev/shm (", uint64_t(v.f_bavail) * v.f_frsize >> 20,
                   " MiB free); using ordinary memory, so collectives on it copy through staging buffers "
                   "(enlarge /dev/shm, e.g. docker run --shm-size)");
    store_.set(keys + "fits", fits ? "1" : "0");
  } else {
    fits = store::to_string(store_.get(keys + "fits", options().timeout)) == "1";
  }
  if (!fits) return ProcessGroup::alloc_shared(bytes);
  auto seg = std::make_shared<shm::ShmSegment>(store_, keys, rank(), size(), stride * size_t(size()), options().timeout);
  std::byte* base = seg->data();
  shm_->shared_blocks()->add(base, stride, bytes, uint64_t(id));
  std::weak_ptr<shm::SharedBlocks> blocks = shm_->shared_blocks();
  return std::shared_ptr<std::byte[]>(base + size_t(rank()) * stride, [seg, blocks, base](std::byte*) {
    if (auto b = blocks.lock()) b->remove(base);
  });
}

}  // namespace lockstep::comm
