#include "lockstep/launch/watchdog.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace lockstep::launch {

namespace {

constexpr int kMaxGroups = 4096;  // more workers than this over a job's life go unwatched
constexpr int32_t kGoodbye = 0;   // messages: pid > 0 watch, -pid forget, 0 goodbye

// The watchdog's whole life, with async-signal-safe calls only (the launcher may have had
// other threads at the fork): messages until goodbye (exit) or EOF (the launcher died: kill
// the groups, delete the files, exit). It keeps the launcher's blocked signal mask, so a
// Ctrl-C to the terminal's process group leaves it to the launcher's goodbye.
[[noreturn]] void watchdog_main(int rd, char* const* files) {
  ::prctl(PR_SET_NAME, "lockstep-watch");
  // Hold nothing of the launcher's open: whoever reads its output sees EOF when it exits.
  const int keep = ::fcntl(rd, F_DUPFD, 10);  // out of the way of 0..3, whatever rd was
  const int null = ::open("/dev/null", O_RDWR);
  for (int fd : {0, 1, 2}) ::dup2(null, fd);
  ::dup2(keep, 3);
  ::close_range(4, ~0u, 0);
  pid_t groups[kMaxGroups] = {};
  for (;;) {
    int32_t msg = 0;
    const ssize_t n = ::recv(3, &msg, sizeof msg, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == sizeof msg && msg == kGoodbye) ::_exit(0);
    if (n != sizeof msg) break;  // EOF: the launcher is gone
    const pid_t find = msg > 0 ? 0 : -msg;
    for (pid_t& g : groups) {
      if (g == find) {
        g = msg > 0 ? msg : 0;
        break;
      }
    }
  }
  for (pid_t g : groups) {
    if (g > 0) ::kill(-g, SIGKILL);
  }
  for (char* const* f = files; *f; ++f) ::unlink(*f);
  ::_exit(0);
}

}  // namespace

Watchdog::Watchdog(const std::vector<std::string>& remove_if_killed) {
  int p[2];  // a socket pair, not a pipe: send() with MSG_NOSIGNAL cannot raise SIGPIPE
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) != 0) {
    std::fprintf(
        stderr,
        "lockstep: warning: no watchdog (socketpair: %s); workers may outlive a killed launcher\n",
        std::strerror(errno));
    return;
  }
  std::vector<char*> files;  // built before the fork: the child must not allocate
  for (const auto& f : remove_if_killed) files.push_back(const_cast<char*>(f.c_str()));
  files.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) watchdog_main(p[0], files.data());
  ::close(p[0]);
  if (pid_ < 0) {
    std::fprintf(
        stderr,
        "lockstep: warning: no watchdog (fork: %s); workers may outlive a killed launcher\n",
        std::strerror(errno));
    ::close(p[1]);
    return;
  }
  fd_ = p[1];
}

Watchdog::~Watchdog() {
  if (fd_ < 0) return;
  send(kGoodbye);
  ::close(fd_);
  int st = 0;
  while (::waitpid(pid_, &st, 0) == -1 && errno == EINTR) {
  }
}

void Watchdog::watch(pid_t process_group) {
  send(int32_t(process_group));
}
void Watchdog::forget(pid_t process_group) {
  send(-int32_t(process_group));
}

void Watchdog::send(int32_t msg) {
  if (fd_ < 0) return;
  // One message per packet; a watchdog that died (someone killed it) is no reason to stop.
  while (::send(fd_, &msg, sizeof msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

}  // namespace lockstep::launch
