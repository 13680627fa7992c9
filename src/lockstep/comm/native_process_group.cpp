#include "lockstep/comm/native_process_group.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>

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

// Operations up to this size do not wake a lightly sleeping worker (see worker_loop).
constexpr size_t kLazyBytes = 1 << 20;
constexpr int kLightSlices = 50;

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

}  // namespace

NativeProcessGroup::NativeProcessGroup(store::Store& store, int rank, int world, Options options)
    : store_(store), rank_(rank), world_(world), opt_(std::move(options)) {
  if (world < 1 || rank < 0 || rank >= world)
    LOCKSTEP_THROW(InvalidArgument, "native process group: rank ", rank, " not in world of ", world);
  if (opt_.transport == "auto") opt_.transport = env_or("LOCKSTEP_TRANSPORT", "auto");
  if (opt_.algorithm == "auto") opt_.algorithm = env_or("LOCKSTEP_ALGO", "auto");
  if (env_or("LOCKSTEP_DEBUG", "") == "detail") opt_.debug_checks = true;
  if (auto* n = dynamic_cast<const NativeOptions*>(opt_.backend.get())) native_ = *n;
  if (native_.shm_spin_us < 0) native_.shm_spin_us = env_int("LOCKSTEP_SHM_SPIN_US", -1, 0, 1 << 30);
  if (native_.shm_chunk_bytes == 0)
    native_.shm_chunk_bytes = size_t(env_int("LOCKSTEP_SHM_CHUNK_BYTES", 0, 4096, 1 << 30));
  if (native_.shm_stream == "auto") native_.shm_stream = env_or("LOCKSTEP_SHM_STREAM", "auto");
  if (native_.shm_stream != "auto" && native_.shm_stream != "on" && native_.shm_stream != "off")
    LOCKSTEP_THROW(ConfigError, "LOCKSTEP_SHM_STREAM (or NativeOptions::shm_stream)='", native_.shm_stream,
                   "': expected auto, on or off");
  if (opt_.queue_poll <= Millis(0))
    LOCKSTEP_THROW(ConfigError, "Options::queue_poll must be positive, got ", opt_.queue_poll.count(), " ms");
  monitor_ = std::make_unique<OpMonitor>(store_, rank_, world_, opt_);
  prefix_ = monitor_->prefix();
  if (world_ > 1) rendezvous();
  worker_ = std::thread([this] { worker_loop(); });
}

// Every rank's host identity, by rank (through the store).
std::vector<std::string> NativeProcessGroup::exchange_hosts() {
  const std::string mine = !opt_.host_id.empty() ? opt_.host_id : env_or("LOCKSTEP_HOST_ID", host_identity());
  store_.set(str_cat(prefix_, "host/", rank_), mine);
  std::vector<std::string> hosts(static_cast<size_t>(world_));
  for (int p = 0; p < world_; ++p)
    hosts[size_t(p)] = p == rank_ ? mine : store::to_string(store_.get(str_cat(prefix_, "host/", p), opt_.timeout));
  return hosts;
}

// Hierarchical when asked, or (auto) when ranks span several hosts and some host runs
// several of them: then the intra-host part can go over shared memory.
bool NativeProcessGroup::wants_hierarchy(const std::vector<std::string>& hosts) const {
  if (opt_.algorithm == "hierarchical") return true;
  if (opt_.algorithm != "auto") return false;
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
  const std::string& mine = hosts[size_t(rank_)];
  for (int p = 0; p < world_; ++p)
    if (hosts[size_t(p)] == mine) hier_->local.group_ranks.push_back(p);
  for (const auto& h : order)
    hier_->leaders.group_ranks.push_back(int(std::find(hosts.begin(), hosts.end(), h) - hosts.begin()));
  const size_t host_index = size_t(std::find(order.begin(), order.end(), mine) - order.begin());
  auto make = [&](SubGroup& g, const std::string& name, const std::string& transport) {
    Options o = opt_;
    o.group_name = str_cat(opt_.group_name, "/", name);
    o.transport = transport;
    o.algorithm = "flat";
    const int sub_rank = int(std::find(g.group_ranks.begin(), g.group_ranks.end(), rank_) - g.group_ranks.begin());
    g.pg = std::make_unique<NativeProcessGroup>(store_, sub_rank, int(g.group_ranks.size()), o);
  };
  make(hier_->local, str_cat("host", host_index), "shm");
  if (hier_->local.group_ranks.front() == rank_) make(hier_->leaders, "leaders", "tcp");
  LOCKSTEP_LOG(debug, "hierarchical all-reduce: ", order.size(), " hosts, ", hier_->local.group_ranks.size(),
                     " ranks on this one", hier_->leaders.pg ? " (leader)" : "");
}

// Picks the transport (shm when every rank shares this host, unless told otherwise) and
// connects it; the store carries the host identities, addresses and segment names. Across
// hosts, all-reduce may also get the sub-groups of the hierarchical algorithm.
void NativeProcessGroup::rendezvous() {
  std::string kind = opt_.transport;
  std::vector<std::string> hosts;
  if (kind == "auto" || opt_.algorithm == "hierarchical") hosts = exchange_hosts();
  if (kind == "auto")
    kind = std::all_of(hosts.begin(), hosts.end(), [&](const std::string& h) { return h == hosts[0]; })
               ? "shm" : "tcp";
  if (kind == "shm") {
    shm_ = std::make_unique<shm::ShmGroup>(store_, prefix_, rank_, world_, native_.shm_chunk_bytes,
                                           native_.shm_spin_us, opt_.timeout,
                                           native_.shm_stream == "on"    ? shm::StreamTuner::Mode::kAlways
                                           : native_.shm_stream == "off" ? shm::StreamTuner::Mode::kNever
                                                                      : shm::StreamTuner::Mode::kAuto);
    transport_ = &shm_->transport();
  } else if (kind == "tcp") {
    // Bounded: after a network failure the store may be unreachable too.
    auto board = [this](const std::string& msg) {
      try {
        auto v = store_.compare_set_within(prefix_ + "first_failure", {}, store::to_bytes(msg),
                                           OpMonitor::kDiagnosticsBudget);
        return store::to_string(v);
      } catch (...) {
        monitor_->store_went_silent();  // explain() need not wait for it again
        throw;
      }
    };
    tcp_ = std::make_unique<tcp::TcpTransport>(store_, prefix_, rank_, world_, opt_.timeout, board);
    transport_ = tcp_.get();
    if (!hosts.empty() && wants_hierarchy(hosts)) build_hierarchy(hosts);
  } else {
    LOCKSTEP_THROW(ConfigError, "unknown transport '", kind, "' (LOCKSTEP_TRANSPORT / "
                   "Options::transport): use auto, shm or tcp");
  }
}

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
    finish_avg(data, count, dt, op, world_);
  }
  run(hier_->local, "broadcast inside the host", [&] { return local.broadcast(data, count, dt, 0); });
}

NativeProcessGroup::~NativeProcessGroup() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    if (!queue_.empty()) aborted_ = true;  // nobody waits for them: do not block exit on peers
  }
  if (aborted_ && transport_) transport_->abort();
  if (aborted_ && shm_) shm_->abort();
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

bool NativeProcessGroup::supports(Capability c) const {
  switch (c) {
    case Capability::send_recv:
    case Capability::sub_groups:
    case Capability::abort:
    case Capability::debug_checks: return true;
    case Capability::shared_memory: return shm_ != nullptr;
  }
  return false;
}

std::string NativeProcessGroup::transport_name() const {
  return transport_ ? transport_->name() : "none";
}

void NativeProcessGroup::abort() {
  aborted_ = true;
  if (transport_) transport_->abort();
  if (shm_) shm_->abort();
  cv_.notify_all();
}

void NativeProcessGroup::start_now() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!queue_.empty() && !running_) cv_.notify_one();
}

// One segment for all ranks, rank r's block at r * stride; the group's shared-memory path
// knows the blocks while the memory lives. Rank 0 decides whether it fits in /dev/shm (a
// container's is often 64 MiB; pages past its size would kill the rank with SIGBUS), with a
// quarter to spare for the segments other groups and jobs create meanwhile, and every rank
// follows, with ordinary memory otherwise.
std::shared_ptr<std::byte[]> NativeProcessGroup::alloc_shared(size_t bytes) {
  if (!shm_ || world_ == 1) return ProcessGroup::alloc_shared(bytes);
  const size_t stride = (std::max<size_t>(bytes, 1) + 4095) / 4096 * 4096;
  const int id = shared_allocs_++;  // the same on every rank: alloc_shared is collective
  const std::string keys = str_cat(prefix_, "shared/", id, "/");
  bool fits = false;
  if (rank_ == 0) {
    struct statvfs v {};
    fits = ::statvfs("/dev/shm", &v) == 0 &&
           double(v.f_bavail) * double(v.f_frsize) >= 1.25 * double(stride) * world_;
    if (!fits)
      LOCKSTEP_LOG(warn, "alloc_shared in group '", opt_.group_name, "': ", (stride * size_t(world_)) >> 20,
                   " MiB (", world_, " ranks) do not fit in /dev/shm (", uint64_t(v.f_bavail) * v.f_frsize >> 20,
                   " MiB free); using ordinary memory, so collectives on it copy through staging buffers "
                   "(enlarge /dev/shm, e.g. docker run --shm-size)");
    store_.set(keys + "fits", fits ? "1" : "0");
  } else {
    fits = store::to_string(store_.get(keys + "fits", opt_.timeout)) == "1";
  }
  if (!fits) return ProcessGroup::alloc_shared(bytes);
  auto seg = std::make_shared<shm::ShmSegment>(store_, keys, rank_, world_, stride * size_t(world_), opt_.timeout);
  std::byte* base = seg->data();
  shm_->shared_blocks()->add(base, stride, bytes, uint64_t(id));
  std::weak_ptr<shm::SharedBlocks> blocks = shm_->shared_blocks();
  return std::shared_ptr<std::byte[]>(base + size_t(rank_) * stride, [seg, blocks, base](std::byte*) {
    if (auto b = blocks.lock()) b->remove(base);
  });
}

Work NativeProcessGroup::enqueue(OpKind kind, std::string signature, Body body, size_t bytes) {
  const bool collective = kind != OpKind::send && kind != OpKind::recv;
  std::lock_guard<std::mutex> lk(mu_);
  OpInfo info{kind, collective ? next_seq_++ : next_p2p_++, rank_, opt_.group_name};
  auto state = std::make_shared<TaskState>(info, this, &NativeProcessGroup::help);  // the destructor completes every task
  Work w(state);
  // Waiting longer than the operation's own deadline plus the time its failure may spend on
  // diagnostics (two store exchanges, each bounded) lets its precise error (which peer, which
  // step, what the other ranks last completed) arrive first.
  w.set_default_timeout(opt_.timeout + opt_.timeout / 10 + 2 * OpMonitor::kDiagnosticsBudget +
                        std::chrono::seconds(1));
  if (aborted_) {
    state->complete(std::make_exception_ptr(
        AbortedError(str_cat(info.describe(), ": process group was aborted"))));
    return w;
  }
  queue_.push_back(Task{std::move(state), collective ? std::move(signature) : std::string(),
                        std::move(body), bytes});
  if (deep_sleep_ || bytes > kLazyBytes) cv_.notify_one();
  return w;
}

// The worker runs queued tasks in order. While work keeps coming it naps in short slices
// (light sleep), so that enqueue need not wake it for small operations: a waiter usually runs
// those inline (no thread hand-off), and otherwise the worker finds them within one slice.
// After a while without work it sleeps until notified (deep sleep).
void NativeProcessGroup::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  int idle = 0;
  for (;;) {
    if (!running_ && !queue_.empty()) {
      Task task = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
      lk.unlock();
      run_task(task, false);
      lk.lock();
      running_ = false;
      idle = 0;
      continue;
    }
    if (stop_ && !running_) return;  // queue is empty
    if (idle < kLightSlices) {
      deep_sleep_ = false;
      cv_.wait_for(lk, opt_.queue_poll);
      ++idle;
    } else {
      deep_sleep_ = true;
      cv_.wait(lk);
      deep_sleep_ = false;
    }
  }
}

// Inline help only when the waiter accepts the operation's own timeout (a shorter wait must be
// able to give up without failing the operation); otherwise the worker is woken, so an
// operation enqueued without a notify does not sit out the worker's light-sleep slice.
void NativeProcessGroup::help(void* self, const TaskState& state, Clock::duration wait_timeout) {
  auto& pg = *static_cast<NativeProcessGroup*>(self);
  if (wait_timeout >= pg.opt_.timeout) return pg.help_until(&state);
  std::lock_guard<std::mutex> lk(pg.mu_);
  pg.cv_.notify_one();
}

void NativeProcessGroup::help_until(const WorkState* target) {
  for (;;) {
    Task task;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (running_ || queue_.empty() || target->is_completed()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
    }
    bool mine = task.state.get() == target;
    run_task(task, true);
    {
      std::lock_guard<std::mutex> lk(mu_);
      running_ = false;
      if (!queue_.empty()) cv_.notify_one();  // the worker waited for running_ to clear
    }
    if (mine) return;
  }
}

// on_caller: the waiting thread runs the operation (it has nothing else to do, so its waits
// may spin); otherwise the group's own thread runs it beside the caller's computation.
void NativeProcessGroup::run_task(Task& task, bool on_caller) {
  const OpInfo& info = task.state->info();
  const bool collective = info.kind != OpKind::send && info.kind != OpKind::recv;
  const size_t slot = monitor_->start(info, collective, task.bytes);
  try {
    if (aborted_) LOCKSTEP_THROW(AbortedError, info.describe(), ": process group was aborted");
    const Deadline deadline(coarse_now() + opt_.timeout);  // a tick early at most
    if (shm_) shm_->set_runner(on_caller, task.state.get());
    if (opt_.debug_checks && collective) monitor_->check_signature(info, task.signature);
    task.body(info, deadline);
    monitor_->finish(slot, true);
    if (on_caller) ran_on_waiter_.fetch_add(1, std::memory_order_relaxed);
    task.state->complete();
  } catch (const TimeoutError& e) {
    monitor_->finish(slot, false);
    task.state->complete(std::make_exception_ptr(TimeoutError(str_cat(e.what(), explain(info)))));
  } catch (const PeerError& e) {
    monitor_->finish(slot, false);
    task.state->complete(std::make_exception_ptr(PeerError(e.peer_rank(), e.op(), str_cat(e.what(), explain(info)))));
  } catch (...) {
    monitor_->finish(slot, false);
    task.state->complete(std::current_exception());
  }
}

std::string NativeProcessGroup::explain(const OpInfo& info) {
  if (!shm_) return monitor_->explain(info);
  return monitor_->explain(info, [this](int p) { return shm_->peer_dead(p); });
}

void NativeProcessGroup::check_root(int root, OpKind kind) const {
  if (root < 0 || root >= world_)
    LOCKSTEP_THROW(InvalidArgument, op_kind_name(kind), ": root ", root, " outside [0, ", world_, ")");
}

void NativeProcessGroup::check_peer(int peer, OpKind kind) const {
  if (peer < 0 || peer >= world_ || peer == rank_)
    LOCKSTEP_THROW(InvalidArgument, op_kind_name(kind), ": peer ", peer, " invalid for rank ",
                   rank_, " of ", world_);
}

void NativeProcessGroup::widened(void* data, size_t count, DType dt,
                                 const std::function<void(void*, DType)>& fn) {
  if (!is_half(dt)) return fn(data, dt);
  wide_.reserve(count * sizeof(float));
  auto* f = reinterpret_cast<float*>(wide_.data());
  widen_to_f32(data, f, count, dt);
  fn(f, DType::f32);
  narrow_from_f32(f, data, count, dt);
}

}  // namespace lockstep::comm
