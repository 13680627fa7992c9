#include "lockstep/train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/train/metrics.h"

namespace lockstep::train {

namespace fs = std::filesystem;

namespace {

std::string host_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "?";
  return host;
}

std::string read_all(int fd) {
  std::string text(512, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? size_t(n) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text;
}

// The holder writes its name just after it takes the lock; give it a moment (bounded).
std::string holder_of(int fd) {
  for (int i = 0; i < 20; ++i) {
    std::string text = read_all(fd);
    if (!text.empty()) return text;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "a process that has not written its pid yet";
}

// Replaces the lock file's text; a failure only leaves the next job's error less to say.
bool set_text(int fd, const std::string& text) {
  return ::ftruncate(fd, 0) == 0 &&
         ::pwrite(fd, text.data(), text.size(), 0) == ssize_t(text.size());
}

}  // namespace

RunDirLock::RunDirLock(const fs::path& run_dir, const std::string& job) : path_(run_dir / ".lock") {
  fs::create_directories(run_dir);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw SystemError(
        errno,
        str_cat("cannot open the run directory's lock ", path_.string(), ": ", std::strerror(errno),
                " (is the run directory writable? or pick another --run-dir)"));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = err == EWOULDBLOCK ? holder_of(fd_) : std::string();
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK)
      throw SystemError(err, str_cat("cannot lock ", path_.string(), ": ", std::strerror(err)));
    LOCKSTEP_THROW(ConfigError, "run directory ", run_dir.string(), " is in use by another job (",
                   holder, "; lock ", path_.string(),
                   "): two jobs in one run directory would mix their metrics and "
                   "delete each other's checkpoints. Wait for that job to end, stop it, or pick "
                   "another --run-dir");
  }
  const std::string text = str_cat("pid=", ::getpid(), " host=", host_name(),
                                   " since=", iso8601_utc_now(), " job=", job, "\n");
  set_text(fd_, text);
}

RunDirLock::~RunDirLock() {
  if (fd_ < 0) return;
  set_text(fd_, "");  // nobody holds it now (a killed holder's text stays until the next job)
  ::close(fd_);
}

bool run_dir_lock_needed(const fs::path& run_dir, int rank) {
  if (rank != 0) return false;
  const auto held = getenv_opt(kRunDirLockEnv);
  if (!held) return true;
  std::error_code ec;
  return fs::weakly_canonical(run_dir, ec) != fs::path(*held);
}

}  // namespace lockstep::train
