// LockstepWork and CompletionQueue (process_group.h): how a Work completes, in issue order.
#include <Python.h>

#include <ATen/core/ivalue.h>
#include <c10/core/GradMode.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "process_group.h"

namespace lockstep_torch {
namespace {

using c10d::OpType;
using Ms = std::chrono::milliseconds;

// A waiter gives the completer thread this long beyond the operation's timeout to copy staged
// results back and complete the Work (bounded: the completer's own waits are).
constexpr Ms kCompletionSlack{10'000};

// The type of every Work's future value (made once: each Work used to make its own).
const c10::TypePtr& tensor_list_type() {
  static const c10::TypePtr type = c10::ListType::create(c10::TensorType::get());
  return type;
}

// Set while this thread completes a Work (CompletionQueue::complete_one): a callback run there
// that issues a collective and asks for its future must not wait for the queue it holds.
thread_local bool completing = false;

}  // namespace

// LOCKSTEP_TORCH_FUTURES_ON_CALLER=1 or 0 forces it; unset (or "auto"): where lockstep's thread
// has no core of its own. See LockstepWork::getFuture.
bool futures_on_caller(bool spare_core) {
  const char* v = std::getenv("LOCKSTEP_TORCH_FUTURES_ON_CALLER");
  const std::string_view s = v ? v : "auto";
  if (s == "1") return true;
  if (s == "0") return false;
  TORCH_CHECK(s == "auto" || s.empty(), "LOCKSTEP_TORCH_FUTURES_ON_CALLER='", s,
              "': expected 1, 0 or auto");
  return !spare_core;
}

// --- LockstepWork -------------------------------------------------------------------------

LockstepWork::LockstepWork(int rank, OpType type, std::vector<at::Tensor> outputs, Ms timeout,
                           std::weak_ptr<CompletionQueue> queue)
    : c10d::Work(rank, type),
      outputs_(std::move(outputs)),
      timeout_(timeout),
      future_(c10::make_intrusive<c10::ivalue::Future>(tensor_list_type())),
      queue_(std::move(queue)) {
  if (!outputs_.empty() && outputs_[0].is_cuda())  // made on the issuing thread (make_work)
    stream_ = c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(outputs_[0].device());
}

bool LockstepWork::wait(Ms timeout) {
  const Ms limit = timeout == kNoTimeout ? timeout_ : timeout;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  // Waiting on the lockstep operations first lets this thread run a small one itself (no
  // hand-off to lockstep's thread); their errors reach the caller through complete().
  // lockstep runs an operation on its waiter only when the wait accepts the operation's own
  // timeout (a shorter one must be able to give up): the default wait passes exactly that.
  for (const auto& op : ops_) {
    try {
      op.wait(timeout == kNoTimeout
                  ? timeout_
                  : std::max(Ms(0), std::chrono::duration_cast<Ms>(
                                        deadline - std::chrono::steady_clock::now())));
    } catch (...) {
      break;
    }
  }
  if (auto q = queue_.lock()) q->complete_through(this, deadline + kCompletionSlack);
  std::unique_lock lk(mutex_);  // c10d::Work's mutex_ (std::mutex, or timed_mutex in some 2.x)
  if (!cv_.wait_until(lk, deadline + kCompletionSlack, [&] { return completed_; })) {
    TORCH_CHECK(false, "lockstep ", c10d::opTypeToString(opType_), " on rank ", rank_,
                " did not complete within ", limit.count(),
                " ms; a peer may be slow, stopped or calling a different collective (set "
                "LOCKSTEP_DEBUG=detail to check)");
  }
  if (exception_) std::rethrow_exception(exception_);
  return true;
}

c10::intrusive_ptr<c10::ivalue::Future> LockstepWork::getFuture() {
  auto q = queue_.lock();
  if (!q) return future_;
  if (q->futures_on_caller() && runs_on_asker() && !completing && !PyGILState_Check()) {
    // Asked from C++ without the GIL: DDP's reducer, which asks for each bucket's future as it
    // issues it and blocks in Future::wait() at the end of backward. Completing it here runs
    // the operation on this thread, with no hand-off to lockstep's or the completer's thread
    // and back: where every core computes, each hand-off is a wake-up that waits for a core
    // (bench/python/ddp_steps.py). Where lockstep's thread has a core of its own, a bucket
    // issued in the middle of backward is better reduced there while backward goes on, so
    // this is the default only without a spare core (ProcessGroup::spare_core). Python callers
    // (comm hooks, torch.futures) keep a future that completes in the background.
    q->complete_through(this, std::chrono::steady_clock::now() + timeout_ + kCompletionSlack);
    if (future_->completed()) return future_;
    // Not completed by its deadline (another thread held the queue): the completer must, or
    // DDP's Future::wait(), which has no timeout, would block for good.
  }
  q->want();  // someone will wait on the future, not on wait()
  return future_;
}

// Point-to-point operations never: a recv asked for before its rank's matching send is
// issued would wait for itself.
bool LockstepWork::runs_on_asker() const {
  switch (opType_) {
    case OpType::SEND:
    case OpType::RECV:
    case OpType::RECVANYSOURCE:
      return false;
    default:
      return true;
  }
}

bool LockstepWork::isCompleted() {
  if (auto q = queue_.lock()) q->want();  // polled, not waited for
  return c10d::Work::isCompleted();
}

std::vector<at::Tensor> LockstepWork::result() {
  return outputs_;
}

void LockstepWork::complete(std::exception_ptr error) {
  if (!error) {
    try {
      // On the issuing stream, whichever thread completes the Work: the caller's stream then
      // orders the copies before what it queues after wait().
      const c10::OptionalStreamGuard on(stream_);
      for (auto& f : finishers_) f();
    } catch (...) {
      error = std::current_exception();
    }
  }
  finish(error);  // wakes wait()
  if (error) {
    future_->setError(error);
  } else {
    future_->markCompleted(c10::IValue(outputs_));
  }
}

// --- CompletionQueue: Works complete in issue order (lockstep completes its operations in
// that order too), by the completer thread or by a waiter ---------------------------------

void CompletionQueue::push(WorkPtr w, std::vector<WorkPtr>& retired_out) {
  bool wake;
  {
    std::lock_guard<std::mutex> lk(mu_);
    pending_.push_back(std::move(w));
    retired_out.swap(retired_);
    if (pending_.size() > kUnwatched) wanted_ = true;
    wake = wanted_;
  }
  if (wake) completer_cv_.notify_one();
}

void CompletionQueue::want() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (wanted_ || pending_.empty()) return;
    wanted_ = true;
  }
  completer_cv_.notify_one();
}

bool CompletionQueue::queued(const LockstepWork* w) const {
  return std::any_of(pending_.begin(), pending_.end(),
                     [&](const WorkPtr& p) { return p.get() == w; });
}

void CompletionQueue::run() {
  c10::NoGradGuard no_grad;  // copying back into a leaf tensor that requires grad is fine here
  for (;;) {
    WorkPtr w;
    {
      std::unique_lock<std::mutex> lk(mu_);
      completer_cv_.wait(lk, [&] { return !busy_ && (stop_ || (wanted_ && !pending_.empty())); });
      if (pending_.empty()) return;  // stopped
      w = std::move(pending_.front());
      pending_.pop_front();
      busy_ = true;
    }
    // Counted before its future completes: whoever sees the future done sees the count too.
    by_completer_.fetch_add(1, std::memory_order_relaxed);
    const bool ok = complete_one(w);
    retire(std::move(w), ok);
  }
}

void CompletionQueue::complete_through(const LockstepWork* me, Clock::time_point deadline) {
  c10::NoGradGuard no_grad;
  for (;;) {
    WorkPtr w;
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (!waiter_cv_.wait_until(lk, deadline, [&] { return !busy_ || !queued(me); }) ||
          !queued(me)) {
        return;  // complete (or the caller's wait times out)
      }
      w = std::move(pending_.front());
      pending_.pop_front();
      busy_ = true;
    }
    const bool ok = complete_one(w);
    const bool mine = w.get() == me;
    retire(std::move(w), ok);
    if (mine) return;
  }
}

bool CompletionQueue::complete_one(const WorkPtr& w) {
  completing = true;
  struct Reset {
    ~Reset() { completing = false; }
  } reset;
  std::exception_ptr error;
  for (const auto& op : w->ops_) {
    try {
      op.wait(w->timeout_);
    } catch (...) {
      error = std::current_exception();
      break;
    }
  }
  w->complete(error);
  if (!error) w->keep_.clear();
  return !error;
}

void CompletionQueue::retire(WorkPtr w, bool ok) {
  // Not the last reference here: what a Work owns may reach Python, whose release takes the
  // GIL, and a thread that takes it while Python finalizes is ended by pthread_exit
  // (std::terminate). Callbacks run and are released inside complete(): quiesce() covers
  // those at exit. A failed Work keeps its buffers: after a timeout lockstep may still use
  // them.
  bool wake;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!ok) failed_.push_back(w);
    retired_.push_back(std::move(w));
    busy_ = false;
    if (pending_.empty()) wanted_ = false;
    wake = wanted_ || stop_;
  }
  waiter_cv_.notify_all();
  if (wake) completer_cv_.notify_one();
}

void CompletionQueue::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  completer_cv_.notify_one();
}

bool CompletionQueue::quiesce(Ms timeout) {
  want();
  std::unique_lock<std::mutex> lk(mu_);
  return waiter_cv_.wait_for(lk, timeout, [&] { return pending_.empty() && !busy_; });
}

void CompletionQueue::clear_failed() {
  std::lock_guard<std::mutex> lk(mu_);
  failed_.clear();
}
}  // namespace lockstep_torch
