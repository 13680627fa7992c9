#include "run_command.h"

#include <poll.h>
#include <unistd.h>

#include <csignal>

namespace lockstep::testing {

static void drain(int& fd, std::string& into, launch::Subprocess& p, bool is_out) {
  if (fd < 0) return;
  char buf[65536];
  ssize_t n = ::read(fd, buf, sizeof buf);
  if (n > 0) {
    into.append(buf, size_t(n));
  } else if (n == 0) {
    is_out ? p.close_stdout() : p.close_stderr();
    fd = -1;
  }
}

CommandResult run_command(const std::vector<std::string>& argv, Millis timeout,
                          const std::map<std::string, std::string>& env, double after_s,
                          void (*during)(pid_t)) {
  CommandResult r;
  auto t0 = Clock::now();
  auto dl = Deadline::after(timeout);
  launch::Subprocess p(argv, env);
  int out = p.stdout_fd(), err = p.stderr_fd();
  bool fired = false;
  while (out >= 0 || err >= 0 || !p.poll()) {
    if (dl.expired()) {
      r.timed_out = true;
      p.signal(SIGKILL);
      break;
    }
    if (during && !fired && after_s >= 0 && seconds_since(t0) >= after_s) {
      during(p.pid());
      fired = true;
    }
    std::vector<pollfd> fds;
    if (out >= 0) fds.push_back({out, POLLIN, 0});
    if (err >= 0) fds.push_back({err, POLLIN, 0});
    if (fds.empty()) {
      ::usleep(2000);
      continue;
    }
    if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
    // Read only the pipes that are ready: a read on the other one would block.
    for (auto& f : fds) {
      if (!(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (f.fd == out) drain(out, r.out, p, true);
      else if (f.fd == err) drain(err, r.err, p, false);
    }
  }
  while (!p.poll()) ::usleep(1000);
  r.status = *p.status();
  r.seconds = seconds_since(t0);
  return r;
}

}  // namespace lockstep::testing
