#include "lockstep/launch/subprocess.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>
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

namespace {

// 0 when `file` can be executed, else the errno exec would fail with.
int exec_error(const std::string& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return errno;
  if (S_ISDIR(st.st_mode)) return EISDIR;
  if (!S_ISREG(st.st_mode) || ::access(file.c_str(), X_OK) != 0) return EACCES;
  return 0;
}

}  // namespace

std::string find_program(const std::string& name, const std::string& path) {
  auto fail = [&](int err, const std::string& hint) {
    LOCKSTEP_THROW(ConfigError, "program '", name, "' cannot be run: ", std::strerror(err), hint);
  };
  if (name.empty()) fail(ENOENT, "");
  if (name.find('/') != std::string::npos) {
    const int err = exec_error(name);
    if (err == EACCES) fail(err, " (make it executable: chmod +x)");
    if (err != 0) fail(err, " (check the path; it is relative to the launcher's directory)");
    return name;
  }
  int first_err = 0;  // as execvp: a later directory's match wins over an earlier EACCES
  std::string dirs = path.empty() ? "/bin:/usr/bin" : path;
  for (size_t b = 0, e = 0; b <= dirs.size(); b = e + 1) {
    e = dirs.find(':', b);
    if (e == std::string::npos) e = dirs.size();
    const std::string dir = e == b ? "." : dirs.substr(b, e - b);
    const int err = exec_error(dir + "/" + name);
    if (err == 0) return dir + "/" + name;
    if (err != ENOENT && err != ENOTDIR && first_err == 0) first_err = err;
  }
  fail(first_err != 0 ? first_err : ENOENT,
       first_err != 0 ? str_cat(" (found in PATH but not executable)")
                      : str_cat(" (not found in PATH; give its path, e.g. ./", name, ")"));
  return {};
}

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
