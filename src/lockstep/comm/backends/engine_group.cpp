#include "lockstep/comm/backends/engine_group.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/core/error.h"

namespace lockstep::comm::engine {

EngineGroup::EngineGroup(std::string backend, int rank, int world, Options options)
    : backend_(std::move(backend)), rank_(rank), world_(world), opt_(std::move(options)) {
  if (world < 1 || rank < 0 || rank >= world)
    LOCKSTEP_THROW(InvalidArgument, backend_, " process group: rank ", rank, " / world ", world,
                   " is not a valid placement");
  if (opt_.timeout.count() <= 0)
    LOCKSTEP_THROW(InvalidArgument, backend_, " process group: timeout must be positive");
}

EngineGroup::~EngineGroup() { stop_worker(); }

void EngineGroup::attach_store(store::Store& store) {
  store_ = &store;
  monitor_ = std::make_unique<OpMonitor>(store, rank_, world_, opt_);
}

void EngineGroup::start_worker() {
  worker_ = std::thread([this] { worker_loop(); });
}

void EngineGroup::stop_worker() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  // Anything still queued (destroyed with operations pending) fails rather than dangles.
  std::deque<Task> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    left.swap(queue_);
  }
  for (auto& t : left)
    t.state->complete(std::make_exception_ptr(AbortedError(
        str_cat(t.state->info().describe(), ": the ", backend_, " group was destroyed"))));
}

void EngineGroup::abort() {
  std::deque<Task> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    aborted_.store(true, std::memory_order_release);
    left.swap(queue_);
  }
  cv_.notify_all();
  interrupt();
  for (auto& t : left)
    t.state->complete(std::make_exception_ptr(
        AbortedError(str_cat(t.state->info().describe(), ": aborted"))));
}

OpInfo EngineGroup::next_info(OpKind kind) {
  OpInfo info;
  info.kind = kind;
  info.rank = rank_;
  info.group = opt_.group_name;
  const bool p2p = kind == OpKind::send || kind == OpKind::recv;
  std::lock_guard<std::mutex> lk(mu_);
  info.seq = p2p ? next_p2p_++ : next_seq_++;
  return info;
}

Work EngineGroup::done(OpKind kind) {
  Work w = Work::completed(next_info(kind));
  w.set_default_timeout(opt_.timeout);
  return w;
}

Work EngineGroup::submit(OpKind kind, Body body, std::string signature, size_t bytes) {
  auto state = std::make_shared<WorkState>(next_info(kind));
  Work w(state);
  w.set_default_timeout(opt_.timeout);
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (aborted_.load() || stop_) {
      state->complete(std::make_exception_ptr(
          AbortedError(str_cat(state->info().describe(), ": the ", backend_,
                               " group was aborted"))));
      return w;
    }
    queue_.push_back(Task{state, std::move(body), std::move(signature), bytes});
  }
  cv_.notify_one();
  return w;
}

namespace {

// What every rank must agree on in debug mode: "allreduce float32 count=10 op=sum root=0".
std::string signature(const Op& op) {
  std::string s = str_cat(op_kind_name(op.kind), " ", dtype_name(op.dtype), " count=", op.count);
  if (op.kind == OpKind::allreduce || op.kind == OpKind::reduce || op.kind == OpKind::reduce_scatter)
    s += str_cat(" op=", reduce_op_name(op.op));
  if (op.peer >= 0) s += str_cat(" root=", op.peer);
  return s;
}

}  // namespace

Work EngineGroup::submit_op(const Op& op) {
  const bool p2p = op.kind == OpKind::send || op.kind == OpKind::recv;
  const bool debug = monitor_ && monitor_->debug_checks() && !p2p;
  return submit(
      op.kind,
      [this, op, p2p](const OpInfo& info, Deadline dl) -> std::unique_ptr<Pending> {
        if (p2p)
          if (auto p = post(op, info)) return p;
        execute(op, info, dl);
        return nullptr;
      },
      debug ? signature(op) : std::string(), op.count * dtype_size(op.dtype));
}

void EngineGroup::worker_loop() {
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    Task task;
    bool have = false, stopping = false;
    {
      std::unique_lock<std::mutex> lk(mu_);
      auto ready = [&] { return stop_ || !queue_.empty(); };
      if (posted_.empty())
        cv_.wait(lk, ready);
      else
        cv_.wait_for(lk, nap, ready);
      if (!queue_.empty() && !stop_) {  // on stop, stop_worker() fails what is left
        task = std::move(queue_.front());
        queue_.pop_front();
        have = true;
      } else {
        stopping = stop_;
      }
    }
    if (have) run_task(task);
    if (aborted()) fail_posted("aborted");
    if (stopping) {
      fail_posted("the group was destroyed with the transfer pending");
      return;
    }
    // Poll posted transfers; back off (20 us .. 1 ms) while none completes.
    if (poll_posted())
      nap = std::chrono::microseconds(20);
    else
      nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(1));
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
    p.state->complete(std::make_exception_ptr(AbortedError(
        str_cat(p.state->info().describe(), ": ", why))));
  }
  posted_.clear();
}

void EngineGroup::run_task(Task& task) {
  const OpInfo& info = task.state->info();
  if (broken_) {
    task.state->complete(broken_);
    return;
  }
  const bool p2p = info.kind == OpKind::send || info.kind == OpKind::recv;
  const size_t slot = monitor_ && !p2p ? monitor_->start(info, true, task.bytes) : 0;
  std::exception_ptr err;
  try {
    const Deadline dl = Deadline::after(opt_.timeout);
    if (!task.signature.empty()) monitor_->check_signature(info, task.signature);
    if (auto pending = task.body(info, dl)) {
      posted_.push_back(Posted{task.state, std::move(pending), dl});
      return;  // completed by poll_posted()
    }
  } catch (const Error&) {
    err = std::current_exception();
  } catch (const std::exception& e) {
    err = std::make_exception_ptr(
        PeerError(-1, std::string(op_kind_name(info.kind)),
                  str_cat(info.describe(), " failed in the ", backend_, " backend: ", e.what())));
  }
  if (monitor_ && !p2p) monitor_->finish(slot, err == nullptr);
  if (aborted() && err) {
    err = std::make_exception_ptr(AbortedError(str_cat(info.describe(), ": aborted")));
  } else if (err && !p2p) {
    err = explained(err, info);
  }
  // After a failed collective the engine's state is unknown (it may be half done on some
  // peers), so every later operation fails at once instead of mismatching or hanging.
  if (err && !p2p) broken_ = err;
  task.state->complete(err);
}

std::exception_ptr EngineGroup::explained(const std::exception_ptr& err, const OpInfo& info) {
  if (!monitor_) return err;
  try {
    std::rethrow_exception(err);
  } catch (const TimeoutError& e) {
    return std::make_exception_ptr(TimeoutError(str_cat(e.what(), monitor_->explain(info))));
  } catch (const PeerError& e) {
    return std::make_exception_ptr(PeerError(e.peer_rank(), e.op(), str_cat(e.what(), monitor_->explain(info))));
  } catch (...) {
    return err;
  }
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
  return submit_op(Op{OpKind::allreduce, nullptr, data, count, dtype, op});
}

Work EngineGroup::broadcast(void* data, size_t count, DType dtype, int root) {
  check_root(root, OpKind::broadcast);
  if (count == 0 || local()) return done(OpKind::broadcast);
  return submit_op(Op{OpKind::broadcast, nullptr, data, count, dtype, ReduceOp::sum, root});
}

Work EngineGroup::reduce(void* data, size_t count, DType dtype, ReduceOp op, int root) {
  check_root(root, OpKind::reduce);
  if (count == 0 || local()) return done(OpKind::reduce);
  return submit_op(Op{OpKind::reduce, nullptr, data, count, dtype, op, root});
}

Work EngineGroup::allgather(const void* in, void* out, size_t count, DType dtype) {
  if (count == 0) return done(OpKind::allgather);
  if (local()) {
    copy_local(out, in, count * dtype_size(dtype));
    return done(OpKind::allgather);
  }
  return submit_op(Op{OpKind::allgather, in, out, count, dtype});
}

Work EngineGroup::reduce_scatter(const void* in, void* out, size_t count, DType dtype,
                                 ReduceOp op) {
  if (count == 0) return done(OpKind::reduce_scatter);
  if (local()) {
    copy_local(out, in, count * dtype_size(dtype));
    return done(OpKind::reduce_scatter);
  }
  return submit_op(Op{OpKind::reduce_scatter, in, out, count, dtype, op});
}

Work EngineGroup::gather(const void* in, void* out, size_t count, DType dtype, int root) {
  check_root(root, OpKind::gather);
  if (count == 0) return done(OpKind::gather);
  if (local()) {
    copy_local(out, in, count * dtype_size(dtype));
    return done(OpKind::gather);
  }
  return submit_op(Op{OpKind::gather, in, out, count, dtype, ReduceOp::sum, root});
}

Work EngineGroup::scatter(const void* in, void* out, size_t count, DType dtype, int root) {
  check_root(root, OpKind::scatter);
  if (count == 0) return done(OpKind::scatter);
  if (local()) {
    copy_local(out, in, count * dtype_size(dtype));
    return done(OpKind::scatter);
  }
  return submit_op(Op{OpKind::scatter, in, out, count, dtype, ReduceOp::sum, root});
}

Work EngineGroup::alltoall(const void* in, void* out, size_t count, DType dtype) {
  if (count == 0) return done(OpKind::alltoall);
  if (local()) {
    copy_local(out, in, count * dtype_size(dtype));
    return done(OpKind::alltoall);
  }
  return submit_op(Op{OpKind::alltoall, in, out, count, dtype});
}

Work EngineGroup::barrier() {
  if (local()) return done(OpKind::barrier);
  return submit_op(Op{OpKind::barrier});
}

Work EngineGroup::send(const void* data, size_t count, DType dtype, int dst, uint32_t tag) {
  check_peer(dst, OpKind::send);
  if (count == 0) return done(OpKind::send);
  return submit_op(Op{OpKind::send, data, nullptr, count, dtype, ReduceOp::sum, dst, tag});
}

Work EngineGroup::recv(void* data, size_t count, DType dtype, int src, uint32_t tag) {
  check_peer(src, OpKind::recv);
  if (count == 0) return done(OpKind::recv);
  return submit_op(Op{OpKind::recv, nullptr, data, count, dtype, ReduceOp::sum, src, tag});
}

std::unique_ptr<ProcessGroup> EngineGroup::new_group(const std::vector<int>& ranks) {
  check_group_ranks(ranks, world_);
  std::string name;
  {
    std::lock_guard<std::mutex> lk(mu_);
    name = str_cat(opt_.group_name, "/sub", subgroups_++);
  }
  // Built on the worker, between this group's collectives in issue order.
  auto result = std::make_shared<std::unique_ptr<ProcessGroup>>();
  Work w = submit(OpKind::barrier,
                  [this, ranks, name, result](const OpInfo&, Deadline dl) -> std::unique_ptr<Pending> {
                    *result = make_subgroup(ranks, name, dl);
                    return nullptr;
                  });
  w.wait(opt_.timeout + std::chrono::seconds(5));
  return std::move(*result);
}

// --- helpers ------------------------------------------------------------------------------

void EngineGroup::copy_local(void* dst, const void* src, size_t bytes) {
  if (dst != src) std::memmove(dst, src, bytes);
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
