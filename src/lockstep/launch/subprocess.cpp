#include "lockstep/launch/subprocess.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>

#include "lockstep/core/error.h"

extern char** environ;

namespace lockstep::launch {

std::string ExitStatus::describe() const {
  if (!signaled) return str_cat("exited with code ", code);
  const char* name = sigabbrev_np(code);
  return str_cat("killed by signal ", code, name ? str_cat(" (SIG", name, ")") : "");
}

namespace {

// Builds "KEY=VALUE" strings: the current environment with `overrides` applied.
std::vector<std::string> merged_environment(const std::map<std::string, std::string>& overrides) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    auto key = std::string(kv.substr(0, kv.find('=')));
    if (!overrides.count(key)) out.emplace_back(kv);
  }
  for (auto& [k, v] : overrides) out.push_back(k + "=" + v);
  return out;
}

// `args` and `envp`: null-terminated, built before fork (no allocation in the child: another
// thread of the parent may have held an allocator lock at the fork).
[[noreturn]] void exec_child(char* const* args, char* const* envp, int out_w, int err_w,
                             pid_t parent, const cpu_set_t* cpus) {
  // Only async-signal-safe calls from here on.
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The launcher blocks signals to read them through a signalfd; workers start clean.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  if (::getppid() != parent) ::_exit(127);  // parent already gone
  if (cpus != nullptr && ::sched_setaffinity(0, sizeof *cpus, cpus) != 0) {
    const char msg[] = "lockstep: sched_setaffinity failed; run with --cpu-bind none\n";
    ssize_t r = ::write(err_w, msg, sizeof msg - 1);
    (void)r;
    ::_exit(127);
  }
  ::dup2(out_w, STDOUT_FILENO);
  ::dup2(err_w, STDERR_FILENO);
  ::execvpe(args[0], args, envp);
  const char msg[] = "lockstep: exec failed: ";
  ssize_t r = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  r = ::write(STDERR_FILENO, args[0], std::strlen(args[0]));
  r = ::write(STDERR_FILENO, "\n", 1);
  (void)r;
  ::_exit(127);
}

}  // namespace

Subprocess::Subprocess(const std::vector<std::string>& argv,
                       const std::map<std::string, std::string>& env, const std::vector<int>& cpus) {
  if (argv.empty()) LOCKSTEP_THROW(InvalidArgument, "Subprocess: empty command line");
  int out[2], err[2];
  LOCKSTEP_CHECK_ERRNO(::pipe2(out, O_CLOEXEC), "pipe for worker stdout");
  if (::pipe2(err, O_CLOEXEC) == -1) {
    ::close(out[0]);
    ::close(out[1]);
    LOCKSTEP_CHECK_ERRNO(-1, "pipe for worker stderr");
  }
  auto envv = merged_environment(env);
  std::vector<char*> args, envp;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (auto& e : envv) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  cpu_set_t cpu_set;
  CPU_ZERO(&cpu_set);
  for (int c : cpus) {
    LOCKSTEP_CHECK(c >= 0 && c < CPU_SETSIZE, "Subprocess: CPU ", c, " out of range");
    CPU_SET(c, &cpu_set);
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) exec_child(args.data(), envp.data(), out[1], err[1], parent, cpus.empty() ? nullptr : &cpu_set);
  ::close(out[1]);
  ::close(err[1]);
  if (pid < 0) {
    int e = errno;
    ::close(out[0]);
    ::close(err[0]);
    LOCKSTEP_CHECK_ERRNO(-1, "fork for '", argv[0], "' (errno ", e, ")");
  }
  ::setpgid(pid, pid);  // also done in the child; whichever runs first wins the race
  pid_ = pid;
  out_fd_ = out[0];
  err_fd_ = err[0];
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !status_) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int st;
    while (::waitpid(pid_, &st, 0) == -1 && errno == EINTR) {
    }
  }
  close_stdout();
  close_stderr();
}

void Subprocess::close_stdout() {
  if (out_fd_ >= 0) ::close(out_fd_);
  out_fd_ = -1;
}

void Subprocess::close_stderr() {
  if (err_fd_ >= 0) ::close(err_fd_);
  err_fd_ = -1;
}

void Subprocess::signal(int sig) {
  if (pid_ <= 0 || status_) return;
  if (::kill(-pid_, sig) == -1) ::kill(pid_, sig);
}

std::optional<ExitStatus> Subprocess::poll() {
  if (status_ || pid_ <= 0) return status_;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    ExitStatus s;
    if (WIFSIGNALED(st)) {
      s.signaled = true;
      s.code = WTERMSIG(st);
    } else {
      s.code = WEXITSTATUS(st);
    }
    status_ = s;
  }
  return status_;
}

}  // namespace lockstep::launch
