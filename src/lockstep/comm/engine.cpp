#include "lockstep/comm/engine.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/core/error.h"

namespace lockstep::comm::engine {
namespace {

// Operations up to this size do not wake a napping group thread (see worker_loop); with no
// spare core, none does (EngineTraits::spare_core).
constexpr size_t kLazyBytes = 1 << 20;
// Naps (Options::queue_poll each) without work before the group's thread sleeps until notified.
constexpr int kLightSlices = 50;

bool is_p2p(OpKind k) { return k == OpKind::send || k == OpKind::recv; }

}  // namespace

EngineGroup::EngineGroup(std::string backend, int rank, int world, Options options)
    : backend_(std::move(backend)),
      rank_(rank),
      world_(world),
      opt_(std::move(options)),
      // Waiting longer than the operation's own deadline plus the time its failure may spend
      // on diagnostics (two store exchanges, each bounded) lets its precise error (which peer,
      // which step, what the other ranks last completed) arrive first.
      wait_default_(opt_.timeout + opt_.timeout / 10 + 2 * OpMonitor::kDiagnosticsBudget +
                    std::chrono::seconds(1)) {
  if (world < 1 || rank < 0 || rank >= world)
    LOCKSTEP_THROW(InvalidArgument, backend_, " process group: rank ", rank, " / world ", world,
                   " is not a valid placement");
  if (opt_.timeout.count() <= 0)
    LOCKSTEP_THROW(InvalidArgument, backend_, " process group: Options::timeout must be positive, got ",
                   opt_.timeout.count(), " ms");
  if (opt_.queue_poll <= Millis(0))
    LOCKSTEP_THROW(ConfigError, backend_, " process group: Options::queue_poll must be positive, got ",
                   opt_.queue_poll.count(), " ms");
}

EngineGroup::~EngineGroup() { stop_worker(); }

void EngineGroup::attach_store(store::Store& store) {
  store_ = &store;
  monitor_ = std::make_unique<OpMonitor>(store, rank_, world_, opt_);
}

void EngineGroup::start_worker() {
  if (!traits_.run_inline) traits_.lazy_wake = false;  // nobody else would run a held-back op
  worker_ = std::thread([this] { worker_loop(); });
}

void EngineGroup::stop_worker() {
  bool queued = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    queued = !queue_.empty();
    // Nobody waits for them: do not block exit on peers.
    if (queued) aborted_.store(true, std::memory_order_release);
  }
  if (queued) interrupt();
  cv_.notify_all();
  helper_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  Ring<Task> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    left.swap(queue_);
  }
  fail_queued(left, "was destroyed with it queued");
  fail_posted("the group was destroyed with the transfer pending");
}

void EngineGroup::abort() {
  Ring<Task> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    aborted_.store(true, std::memory_order_release);
    left.swap(queue_);
  }
  cv_.notify_all();
  interrupt();
  fail_queued(left, "was aborted");
}

void EngineGroup::fail_queued(Ring<Task>& left, const char* why) {
  while (!left.empty()) {
    Task t = left.pop();
    t.state->complete(std::make_exception_ptr(
        AbortedError(str_cat(t.state->info().describe(), ": the ", backend_, " group ", why))));
  }
}

void EngineGroup::start_now() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!queue_.empty() && !running_) cv_.notify_one();
}

Work EngineGroup::done(OpKind kind) {
  OpInfo info{kind, 0, rank_, opt_.group_name};
  {
    std::lock_guard<std::mutex> lk(mu_);
    info.seq = is_p2p(kind) ? next_p2p_++ : next_seq_++;
  }
  Work w = Work::completed(std::move(info));
  w.set_default_timeout(wait_default_);
  return w;
}

size_t EngineGroup::op_bytes(const Op& op) const {
  const size_t bytes = op.count * dtype_size(op.dtype);
  switch (op.kind) {
    case OpKind::allgather:
    case OpKind::reduce_scatter:
    case OpKind::alltoall: return bytes * size_t(world_);
    case OpKind::barrier: return 0;
    default: return bytes;
  }
}

// One lock, one allocation (the task record); the group's thread is woken only when it
// sleeps deeply or the operation is large and the thread has a core of its own (see
// worker_loop).
Work EngineGroup::enqueue(Op op, std::function<void(Deadline)> custom) {
  const size_t bytes = op_bytes(op);
  op.after_event = DeviceOrder::current();
  std::unique_lock<std::mutex> lk(mu_);
  OpInfo info{op.kind, is_p2p(op.kind) ? next_p2p_++ : next_seq_++, rank_, opt_.group_name};
  // The engine completes every task before it goes away (stop_worker).
  auto state = std::make_shared<TaskState>(std::move(info), this, &EngineGroup::help);
  Work w(state);
  w.set_default_timeout(wait_default_);
  if (aborted_.load(std::memory_order_relaxed) || stop_) {
    lk.unlock();
    state->complete(std::make_exception_ptr(
        AbortedError(str_cat(state->info().describe(), ": the ", backend_, " group was aborted"))));
    return w;
  }
  queue_.push(Task{std::move(state), std::move(op), std::move(custom)});
  if (deep_sleep_ || !traits_.lazy_wake || (traits_.spare_core && bytes > kLazyBytes)) cv_.notify_one();
  return w;
}

// The group's thread runs queued tasks in order and polls posted transfers. While work keeps
// coming it naps in short slices (light sleep), so that enqueue need not wake it for small
// operations: a waiter usually runs those inline (no thread hand-off), and otherwise this
// thread finds them within one slice. After a while without work it sleeps until notified.
// While a waiter helps (help_until), the queue is the waiter's: this thread only naps.
void EngineGroup::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  int idle = 0;
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    if (stop_) return;  // stop_worker() fails what is left
    if (helpers_ > 0) {  // the last one to leave notifies if anything is left for this thread
      deep_sleep_ = false;
      cv_.wait_for(lk, opt_.queue_poll);
      continue;
    }
    if (!running_ && !queue_.empty()) {
      Task task = queue_.pop();
      running_ = true;
      lk.unlock();
      run_task(task, false);
      task = Task{};
      lk.lock();
      end_run();
      idle = 0;
      continue;
    }
    if (!running_ && !posted_.empty()) {
      running_ = true;
      lk.unlock();
      const bool any = poll_posted();
      if (aborted()) fail_posted("aborted");
      lk.lock();
      end_run();
      // Back off (20 us .. 1 ms) while no transfer completes.
      nap = any ? std::chrono::microseconds(20)
                : std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(1));
      if (queue_.empty() && !stop_) cv_.wait_for(lk, nap);
      continue;
    }
    if (traits_.lazy_wake && idle < kLightSlices) {
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
// able to give up without failing the operation); otherwise the group's thread is woken, so
// an operation enqueued without a notify does not sit out its light-sleep slice.
void EngineGroup::help(void* self, const TaskState& state, Clock::duration wait_timeout) {
  auto& g = *static_cast<EngineGroup*>(self);
  if (g.traits_.run_inline && wait_timeout >= g.opt_.timeout) return g.help_until(&state, wait_timeout);
  std::lock_guard<std::mutex> lk(g.mu_);
  g.cv_.notify_one();
}

// A waiter that finds another thread running a task (the group's thread, busy with an earlier
// operation or still finishing the one this waiter waited for last) waits for that task to end
// and then runs the queue itself, up to its own operation. It used to go to sleep instead, and
// the group's thread, going straight on, ran the waiter's operation too: a hand-off each way,
// and, since the waiter came back with its next operation while that thread was finishing,
// again the next time (a loaded 2-core machine ran 29 of 40 synchronous all-reduces so).
void EngineGroup::help_until(const WorkState* target, Clock::duration wait_timeout) {
  const Deadline deadline = Deadline::after(wait_timeout);
  std::unique_lock<std::mutex> lk(mu_);
  ++helpers_;
  for (;;) {
    const auto idle = [&] { return !running_ || stop_ || target->is_completed(); };
    if (!helper_cv_.wait_until(lk, deadline.at(), idle)) break;  // the caller's wait times out
    if (stop_ || queue_.empty() || target->is_completed()) break;
    Task task = queue_.pop();
    running_ = true;
    lk.unlock();
    const bool mine = task.state.get() == target;
    run_task(task, true);
    task = Task{};
    lk.lock();
    end_run();
    if (mine) break;
  }
  // The group's thread left the queue to the helpers; now it is its own again.
  if (--helpers_ == 0 && !running_ && (!queue_.empty() || !posted_.empty())) cv_.notify_one();
}

void EngineGroup::end_run() {
  running_ = false;
  if (helpers_ > 0) helper_cv_.notify_all();
}

// on_caller: the waiting thread runs the operation (it has nothing else to do, so its waits
// may spin); otherwise the group's own thread runs it beside the caller's computation.
void EngineGroup::run_task(Task& task, bool on_caller) {
  const OpInfo& info = task.state->info();
  const bool collective = !is_p2p(info.kind);
  if (broken_) {
    task.state->complete(broken_error(info));
    return;
  }
  const size_t slot = monitor_ ? monitor_->start(info, collective, op_bytes(task.op)) : 0;
  std::exception_ptr err;
  bool refused = false;  // InvalidArgument: every rank refused it before moving any data
  try {
    if (aborted()) LOCKSTEP_THROW(AbortedError, info.describe(), ": the ", backend_, " group was aborted");
    const Deadline dl(coarse_now() + opt_.timeout);  // a tick early at most
    if (task.custom) {
      task.custom(dl);
    } else {
      before_execute(on_caller, *task.state);
      if (collective && monitor_ && monitor_->debug_checks())
        monitor_->check_signature(info, signature(task.op));
      std::unique_ptr<Pending> pending;
      if (!collective) pending = post(task.op, info);
      if (pending) {
        if (monitor_) monitor_->finish(slot, true);  // handed to the engine: polled from now on
        posted_.push_back(Posted{std::move(task.state), std::move(pending), dl});
        return;
      }
      execute(task.op, info, dl);
    }
  } catch (const InvalidArgument&) {
    err = std::current_exception();
    refused = true;
  } catch (const Error&) {
    err = std::current_exception();
  } catch (const std::exception& e) {
    err = std::make_exception_ptr(
        PeerError(-1, std::string(op_kind_name(info.kind)),
                  str_cat(info.describe(), " failed in the ", backend_, " backend: ", e.what())));
  } catch (...) {
    err = std::current_exception();
  }
  if (monitor_) monitor_->finish(slot, err == nullptr);
  if (err) {
    if (aborted())
      err = std::make_exception_ptr(
          AbortedError(str_cat(info.describe(), ": the ", backend_, " group was aborted")));
    else
      err = explained(err, info);
    // After a failed collective the engine's state is unknown (it may be half done on some
    // peers), so every later operation fails at once instead of mismatching or hanging. A
    // refused one (a debug-mode mismatch, buffers the ranks disagree on) moved nothing.
    if (collective && !refused) {
      broken_ = err;
      broken_op_ = info.describe();
    }
  } else if (on_caller) {
    ran_on_waiter_.fetch_add(1, std::memory_order_relaxed);
  }
  task.state->complete(err);
}

// An operation after the group broke is not run: the first failure's kind of error, naming
// this operation and pointing back to that failure (whose report is not repeated).
std::exception_ptr EngineGroup::broken_error(const OpInfo& info) const {
  const std::string msg = str_cat(info.describe(), " was not run: this group failed before, in ",
                                  broken_op_, " (see that error and the flight recorder printed then)");
  try {
    std::rethrow_exception(broken_);
  } catch (const TimeoutError&) {
    return std::make_exception_ptr(TimeoutError(msg));
  } catch (const PeerError& e) {
    return std::make_exception_ptr(PeerError(e.peer_rank(), std::string(op_kind_name(info.kind)), msg));
  } catch (const AbortedError&) {
    return std::make_exception_ptr(AbortedError(msg));
  } catch (...) {
    return std::make_exception_ptr(PeerError(-1, std::string(op_kind_name(info.kind)), msg));
  }
}

// What every rank must agree on in debug mode: "allreduce float32 count=10 op=sum root=0".
std::string EngineGroup::signature(const Op& op) const {
  if (op.kind == OpKind::barrier) return "barrier";
  std::string s = str_cat(op_kind_name(op.kind), " ", dtype_name(op.dtype), " count=", op.count);
  if (op.kind == OpKind::allreduce || op.kind == OpKind::reduce || op.kind == OpKind::reduce_scatter)
    s += str_cat(" op=", reduce_op_name(op.op));
  if (op.peer >= 0) s += str_cat(" root=", op.peer);
  if (op.check) s += " check_finite";
  return s + signature_note(op);
}

std::exception_ptr EngineGroup::explained(const std::exception_ptr& err, const OpInfo& info) {
  if (!monitor_) return err;
  auto exited = [this](int p) { return peer_exited(p); };
  try {
    std::rethrow_exception(err);
  } catch (const TimeoutError& e) {
    return std::make_exception_ptr(TimeoutError(str_cat(e.what(), monitor_->explain(info, exited))));
  } catch (const PeerError& e) {
    return std::make_exception_ptr(
        PeerError(e.peer_rank(), e.op(), str_cat(e.what(), monitor_->explain(info, exited))));
  } catch (...) {
    return err;
  }
}

bool EngineGroup::poll_posted() {
  bool any = false;
  for (size_t i = 0; i < posted_.size();) {
    Posted& p = posted_[i];
    std::exception_ptr err;
    bool finished = false;
    try {
      finished = p.pending->test();
      if (!finished && p.deadline.expired())
        LOCKSTEP_THROW(TimeoutError, p.state->info().describe(), " did not complete within ",
                       opt_.timeout.count(), " ms; is the peer posting the matching ",
                       p.state->info().kind == OpKind::send ? "recv" : "send", "?");
    } catch (...) {
      err = std::current_exception();
      finished = true;
    }
    if (!finished) {
      ++i;
      continue;
    }
    p.pending.reset();  // cancels the transfer when it failed
    p.state->complete(err);
    posted_.erase(posted_.begin() + long(i));
    any = true;
  }
  return any;
}

void EngineGroup::fail_posted(const char* why) {
  for (auto& p : posted_) {
    p.pending.reset();
    p.state->complete(
        std::make_exception_ptr(AbortedError(str_cat(p.state->info().describe(), ": ", why))));
  }
  posted_.clear();
}

void EngineGroup::check_root(int root, OpKind kind) const {
  if (root < 0 || root >= world_)
    LOCKSTEP_THROW(InvalidArgument, op_kind_name(kind), ": root ", root,
                   " is not a rank of a group of ", world_);
}

void EngineGroup::check_peer(int peer, OpKind kind) const {
  if (peer < 0 || peer >= world_ || peer == rank_)
    LOCKSTEP_THROW(InvalidArgument, op_kind_name(kind), ": peer ", peer,
                   " is not another rank of a group of ", world_, " (this is rank ", rank_, ")");
}

// --- collectives: validate, take the trivial cases here, queue the rest ------------------

Work EngineGroup::allreduce(void* data, size_t count, DType dtype, ReduceOp op) {
  if (count == 0 || local()) return done(OpKind::allreduce);
  return enqueue(Op{OpKind::allreduce, nullptr, data, count, dtype, op});
}

Work EngineGroup::allreduce_check_finite(void* data, size_t count, DType dtype, ReduceOp op,
                                         std::shared_ptr<FiniteCheck> out) {
  if (!traits_.finite_check || !out) return allreduce(data, count, dtype, op);
  if (count == 0 || local()) {
    out->set(has_nonfinite(data, count, dtype));
    return done(OpKind::allreduce);
  }
  Op o{OpKind::allreduce, nullptr, data, count, dtype, op};
  o.check = std::move(out);
  return enqueue(std::move(o));
}

Work EngineGroup::broadcast(void* data, size_t count, DType dtype, int root) {
  check_root(root, OpKind::broadcast);
  if (count == 0 || local()) return done(OpKind::broadcast);
  return enqueue(Op{OpKind::broadcast, nullptr, data, count, dtype, ReduceOp::sum, root});
}

Work EngineGroup::reduce(void* data, size_t count, DType dtype, ReduceOp op, int root) {
  check_root(root, OpKind::reduce);
  if (count == 0 || local()) return done(OpKind::reduce);
  return enqueue(Op{OpKind::reduce, nullptr, data, count, dtype, op, root});
}

// The operations whose result on a group of one rank is a copy of the input.
Work EngineGroup::copy_or_enqueue(Op op) {
  if (op.count == 0) return done(op.kind);
  if (local()) {
    copy_local(op.out, op.in, op.count * dtype_size(op.dtype));
    return done(op.kind);
  }
  return enqueue(std::move(op));
}

Work EngineGroup::allgather(const void* in, void* out, size_t count, DType dtype) {
  return copy_or_enqueue(Op{OpKind::allgather, in, out, count, dtype});
}

Work EngineGroup::reduce_scatter(const void* in, void* out, size_t count, DType dtype,
                                 ReduceOp op) {
  return copy_or_enqueue(Op{OpKind::reduce_scatter, in, out, count, dtype, op});
}

Work EngineGroup::gather(const void* in, void* out, size_t count, DType dtype, int root) {
  check_root(root, OpKind::gather);
  return copy_or_enqueue(Op{OpKind::gather, in, out, count, dtype, ReduceOp::sum, root});
}

Work EngineGroup::scatter(const void* in, void* out, size_t count, DType dtype, int root) {
  check_root(root, OpKind::scatter);
  return copy_or_enqueue(Op{OpKind::scatter, in, out, count, dtype, ReduceOp::sum, root});
}

Work EngineGroup::alltoall(const void* in, void* out, size_t count, DType dtype) {
  return copy_or_enqueue(Op{OpKind::alltoall, in, out, count, dtype});
}

Work EngineGroup::barrier() {
  if (local()) return done(OpKind::barrier);
  return enqueue(Op{OpKind::barrier});
}

Work EngineGroup::send(const void* data, size_t count, DType dtype, int dst, uint32_t tag) {
  check_peer(dst, OpKind::send);
  if (count == 0) return done(OpKind::send);
  return enqueue(Op{OpKind::send, data, nullptr, count, dtype, ReduceOp::sum, dst, tag});
}

Work EngineGroup::recv(void* data, size_t count, DType dtype, int src, uint32_t tag) {
  check_peer(src, OpKind::recv);
  if (count == 0) return done(OpKind::recv);
  return enqueue(Op{OpKind::recv, nullptr, data, count, dtype, ReduceOp::sum, src, tag});
}

std::unique_ptr<ProcessGroup> EngineGroup::new_group(const std::vector<int>& ranks) {
  check_group_ranks(ranks, world_);
  std::string name;
  {
    std::lock_guard<std::mutex> lk(mu_);
    name = str_cat(opt_.group_name, "/sub", subgroups_++);
  }
  // Built in issue order, between this group's collectives.
  auto result = std::make_shared<std::unique_ptr<ProcessGroup>>();
  Work w = enqueue(Op{OpKind::barrier},
                   [this, ranks, name, result](Deadline dl) { *result = make_subgroup(ranks, name, dl); });
  w.wait(wait_default_);  // as Work::wait() waits: an operation's deadline and its diagnostics
  return std::move(*result);
}

// --- helpers ------------------------------------------------------------------------------

void EngineGroup::copy_local(void* dst, const void* src, size_t bytes) {
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}

std::string rendezvous_prefix(store::Store& store, const std::string& base, int world) {
  const int64_t n = store.add(base + "created", 1);
  return str_cat(base, (n - 1) / world, "/");
}

void check_int_count(size_t count, const OpInfo& info) {
  if (count > size_t(INT_MAX))
    LOCKSTEP_THROW(InvalidArgument, info.describe(), ": count ", count,
                   " exceeds the engine's limit of ", INT_MAX, " elements per call");
}

float* WideBuffer::reserve(size_t count) {
  if (count > cap_) {
    buf_.reset(new float[count]);
    cap_ = count;
  }
  return buf_.get();
}

float* WideBuffer::widen(const void* src, size_t count, DType dtype) {
  float* p = reserve(count);
  widen_to_f32(src, p, count, dtype);
  return p;
}

void WideBuffer::narrow(void* dst, size_t count, DType dtype) const {
  narrow_from_f32(buf_.get(), dst, count, dtype);
}

}  // namespace lockstep::comm::engine
