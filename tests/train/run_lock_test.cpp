// One job per run directory (issue 18 §6): RunDirLock refuses a second holder at once, naming
// the first, and a holder killed with SIGKILL leaves nothing that blocks the next job.
#include "lockstep/train/run_lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "lockstep/core/error.h"
#include "test_util.h"

namespace lockstep::train {
namespace {

std::string lock_text(const std::filesystem::path& run) {
  std::ifstream f(run / ".lock");
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(RunDirLock, SecondHolderIsRefusedNamingTheFirstAndADeadOneBlocksNothing) {
  const auto run = testing::fresh_dir("lock") / "run";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {  // the first job: takes the lock and waits to be killed
    ::close(ready[0]);
    RunDirLock held(run, "first job");
    const char c = 1;
    if (::write(ready[1], &c, 1) != 1) _exit(2);
    ::pause();
    _exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1) << "the child could not take the lock";
  ::close(ready[0]);
  try {
    RunDirLock second(run, "second job");
    ADD_FAILURE() << "a second holder was let in";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(str_cat("is in use by another job (pid=", pid, " host=")), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("job=first job"), std::string::npos) << msg;
    EXPECT_NE(msg.find("pick another --run-dir"), std::string::npos) << msg;
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  {
    RunDirLock third(run, "third job");  // the kernel dropped the dead holder's lock
    EXPECT_NE(lock_text(run).find(str_cat("pid=", ::getpid(), " ")), std::string::npos)
        << lock_text(run);
  }
  EXPECT_EQ(lock_text(run), "") << "a released lock keeps no holder's name";
}

}  // namespace
}  // namespace lockstep::train
