#include "lockstep/comm/work.h"

#include <chrono>

#include "lockstep/core/error.h"

namespace lockstep::comm {

std::string OpInfo::describe() const {
  return str_cat(op_kind_name(kind), " #", seq, " (rank ", rank, ", group '", group, "')");
}

void WorkState::complete(std::exception_ptr error) {
  if (claimed_.exchange(true, std::memory_order_acq_rel)) return;  // the first outcome stays
  error_ = std::move(error);
  done_.store(true, std::memory_order_seq_cst);
  if (blocked_.load(std::memory_order_seq_cst) == 0) return;
  // A waiter counted itself: it is between its count and its sleep (it holds mu_, so taking
  // mu_ here waits until it sleeps) or asleep; either way the notify reaches it.
  { std::lock_guard<std::mutex> lk(mu_); }
  cv_.notify_all();
}

bool WorkState::wait_for(Clock::duration timeout) const {
  if (is_completed()) return true;
  std::unique_lock<std::mutex> lk(mu_);
  blocked_.fetch_add(1, std::memory_order_seq_cst);
  const bool done = cv_.wait_for(lk, timeout, [&] { return done_.load(std::memory_order_seq_cst); });
  blocked_.fetch_sub(1, std::memory_order_relaxed);
  return done;
}

std::exception_ptr WorkState::error() const {
  return is_completed() ? error_ : nullptr;  // error_ is final once done_ is set
}

void Work::wait(Clock::duration timeout) const {
  LOCKSTEP_CHECK(state_ != nullptr, "wait() on an empty Work handle");
  if (!state_->is_completed()) state_->before_wait(timeout);
  if (!state_->wait_for(timeout)) {
    LOCKSTEP_THROW(TimeoutError, state_->info().describe(), " did not complete within ",
                   std::chrono::duration_cast<Millis>(timeout).count(),
                   " ms; a peer may be slow, stopped or calling a different collective "
                   "(set LOCKSTEP_DEBUG=detail to check)");
  }
  if (auto e = state_->error()) std::rethrow_exception(e);
}

void Work::wait() const { wait(default_timeout_); }

bool Work::is_completed() const { return state_ && state_->is_completed(); }

std::exception_ptr Work::error() const { return state_ ? state_->error() : nullptr; }

const OpInfo& Work::info() const {
  LOCKSTEP_CHECK(state_ != nullptr, "info() on an empty Work handle");
  return state_->info();
}

Work Work::completed(OpInfo info) {
  auto s = std::make_shared<WorkState>(info);
  s->complete();
  return Work(std::move(s));
}

}  // namespace lockstep::comm
