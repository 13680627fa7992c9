// TaskState: an engine's record of one queued operation. Its Work handles see only the
// outcome (WorkState); the scheduler also needs to know whether a thread is blocked waiting
// (its core is free, so the shared-memory waits may spin) and to let that waiter run the
// operation itself while the engine's own thread is idle (the caller-runs-it-inline hand-off,
// which saves two thread hand-offs on small messages).
#pragma once

#include <atomic>

#include "lockstep/comm/work.h"

namespace lockstep::comm {

class TaskState final : public WorkState {
 public:
  // Called from Work::wait with the waiter's timeout; declines (returns) when running the
  // operation could overrun it. The engine completes every task before it goes away, so an
  // incomplete task proves that its engine is alive.
  using RunInlineFn = void (*)(void* engine, const TaskState& task, Clock::duration timeout);
  TaskState(OpInfo info, void* engine, RunInlineFn run_inline)
      : WorkState(info), engine_(engine), run_inline_(run_inline) {}
  void before_wait(Clock::duration timeout) const override {
    if (!is_completed()) run_inline_(engine_, *this, timeout);
  }
  bool has_blocked_waiter() const { return blocked_waiters() > 0; }

 private:
  void* engine_;
  RunInlineFn run_inline_;
};

}  // namespace lockstep::comm
