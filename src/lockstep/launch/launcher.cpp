#include "lockstep/launch/launcher.h"

#include <netdb.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <memory>

#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/launch/output.h"
#include "lockstep/launch/store_host.h"
#include "lockstep/launch/subprocess.h"

namespace lockstep::launch {
namespace {

void validate(const LaunchConfig& c) {
  if (c.command.empty()) {
    LOCKSTEP_THROW(ConfigError, "no program to run: give it after `--`, e.g. "
                                "`lockstep run --nproc-per-node 2 -- ./trainer --epochs 1`");
  }
  if (c.nproc_per_node < 1 || c.nproc_per_node > 1024) {
    LOCKSTEP_THROW(ConfigError, "--nproc-per-node=", c.nproc_per_node, " must be in [1, 1024]");
  }
  if (c.nnodes < 1) LOCKSTEP_THROW(ConfigError, "--nnodes=", c.nnodes, " must be >= 1");
  if (c.node_rank < 0 || c.node_rank >= c.nnodes) {
    LOCKSTEP_THROW(ConfigError, "--node-rank=", c.node_rank, " must be in [0, ", c.nnodes - 1,
                   "] for --nnodes=", c.nnodes);
  }
  if (c.nnodes > 1 && c.master_port == 0) {
    LOCKSTEP_THROW(ConfigError, "--master-port is required with --nnodes=", c.nnodes,
                   " (every node must reach the store on node 0 at the same port)");
  }
  if (c.master_port < 0 || c.master_port > 65535) {
    LOCKSTEP_THROW(ConfigError, "--master-port=", c.master_port, " must be in [0, 65535]");
  }
  if (c.max_restarts < 0) LOCKSTEP_THROW(ConfigError, "--max-restarts must be >= 0");
  if (c.nnodes > 1 && !getenv_opt("LOCKSTEP_STORE_TOKEN")) {
    LOCKSTEP_THROW(ConfigError, "LOCKSTEP_STORE_TOKEN must be set to the same secret on every "
                                "node of a multi-node job (e.g. export "
                                "LOCKSTEP_STORE_TOKEN=$(openssl rand -hex 16) before launching)");
  }
}

// Blocks the signals the launcher handles and returns a signalfd that reports them.
class SignalFd {
 public:
  SignalFd() {
    sigemptyset(&set_);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&set_, s);
    ::sigprocmask(SIG_BLOCK, &set_, &old_);
    fd_ = LOCKSTEP_CHECK_ERRNO(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK), "signalfd");
  }
  ~SignalFd() {
    ::close(fd_);
    ::sigprocmask(SIG_SETMASK, &old_, nullptr);
  }
  int fd() const { return fd_; }
  // Drains pending signals; returns the last terminating one (0 if only SIGCHLD).
  int drain() {
    int term = 0;
    signalfd_siginfo si;
    while (::read(fd_, &si, sizeof si) == ssize_t(sizeof si)) {
      if (si.ssi_signo != SIGCHLD) term = int(si.ssi_signo);
    }
    return term;
  }

 private:
  sigset_t set_{}, old_{};
  int fd_ = -1;
};

struct Worker {
  int rank;
  int local_rank;
  std::unique_ptr<Subprocess> proc;
  std::unique_ptr<LinePrefixer> out, err;
};

enum class Outcome { success, worker_failed, interrupted };

struct GroupResult {
  Outcome outcome = Outcome::success;
  int exit_code = 0;
  std::string message;
};

class Group {
 public:
  Group(const LaunchConfig& cfg, const std::map<std::string, std::string>& env, SignalFd& sig)
      : cfg_(cfg), sig_(sig) {
    int world = cfg.nnodes * cfg.nproc_per_node;
    for (int l = 0; l < cfg.nproc_per_node; ++l) {
      Worker w;
      w.local_rank = l;
      w.rank = cfg.node_rank * cfg.nproc_per_node + l;
      auto e = env;
      e["RANK"] = std::to_string(w.rank);
      e["LOCAL_RANK"] = std::to_string(l);
      e["WORLD_SIZE"] = std::to_string(world);
      e["LOCAL_WORLD_SIZE"] = std::to_string(cfg.nproc_per_node);
      e["GROUP_RANK"] = std::to_string(cfg.node_rank);
      e["OMP_NUM_THREADS"] = e.count("OMP_NUM_THREADS") ? e["OMP_NUM_THREADS"] : "1";
      w.proc = std::make_unique<Subprocess>(cfg.command, e);
      std::string prefix = cfg.prefix_output ? str_cat("[rank ", w.rank, "] ") : "";
      w.out = std::make_unique<LinePrefixer>(STDOUT_FILENO, prefix);
      w.err = std::make_unique<LinePrefixer>(STDERR_FILENO, prefix);
      workers_.push_back(std::move(w));
    }
  }

  GroupResult run() {
    GroupResult result;
    Deadline kill_at = Deadline::never();  // set once workers are being stopped
    for (;;) {
      // Check exits before deciding to stop: a worker may fail before the first poll.
      bool done = all_done();
      if (int s = sig_.drain(); s != 0 && result.outcome == Outcome::success) {
        result = {Outcome::interrupted, 128 + s,
                  str_cat("received signal ", s, " (SIG", sigabbrev_np(s),
                          "); forwarded it to all workers")};
        signal_all(s);
        kill_at = Deadline::after(cfg_.grace);
      }
      if (result.outcome == Outcome::success && record_first_failure(result)) {
        signal_all(SIGTERM);
        kill_at = Deadline::after(cfg_.grace);
      }
      if (done) break;
      if (kill_at.expired()) {
        signal_all(SIGKILL);
        kill_at = Deadline::never();
      }
      pump_io(kill_at.is_never() ? 1000 : kill_at.poll_timeout_ms());
    }
    drain_output();
    return result;
  }

 private:
  // Fills `result` from the first worker (in rank order) that has failed; false if none.
  bool record_first_failure(GroupResult& result) {
    for (auto& w : workers_) {
      auto st = w.proc->poll();
      if (!st || st->ok()) continue;
      result = {Outcome::worker_failed, st->shell_code(),
                str_cat("worker rank ", w.rank, " (local rank ", w.local_rank, ", pid ",
                        w.proc->pid(), ") ", st->describe(),
                        "; stopped the other workers. See its output above (lines "
                        "prefixed [rank ", w.rank, "]).")};
      return true;
    }
    return false;
  }

  bool all_done() {
    for (auto& w : workers_) {
      if (!w.proc->poll()) return false;
    }
    return true;
  }

  void signal_all(int s) {
    for (auto& w : workers_) w.proc->signal(s);
  }

  // Waits up to timeout_ms for output or a signal, and forwards what arrived.
  void pump_io(int timeout_ms) {
    std::vector<pollfd> fds{{sig_.fd(), POLLIN, 0}};
    for (auto& w : workers_) {
      if (w.proc->stdout_fd() >= 0) fds.push_back({w.proc->stdout_fd(), POLLIN, 0});
      if (w.proc->stderr_fd() >= 0) fds.push_back({w.proc->stderr_fd(), POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) return;
    for (auto& w : workers_) forward(w);
  }

  void forward(Worker& w) {
    if (w.proc->stdout_fd() >= 0 && !w.out->pump(w.proc->stdout_fd())) w.proc->close_stdout();
    if (w.proc->stderr_fd() >= 0 && !w.err->pump(w.proc->stderr_fd())) w.proc->close_stderr();
  }

  // After exit, read what is left in the pipes (bounded: children are gone).
  void drain_output() {
    for (auto& w : workers_) {
      for (int i = 0; i < 1000 && (w.proc->stdout_fd() >= 0 || w.proc->stderr_fd() >= 0); ++i) {
        forward(w);
      }
      w.out->flush();
      w.err->flush();
    }
  }

  const LaunchConfig& cfg_;
  SignalFd& sig_;
  std::vector<Worker> workers_;
};

void note(const LaunchConfig& cfg, const std::string& msg) {
  if (cfg.log) std::fprintf(cfg.log, "lockstep run: %s\n", msg.c_str());
  if (cfg.log) std::fflush(cfg.log);
}

}  // namespace

std::string make_job_token() {
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  unsigned char bytes[16];
  if (!urandom.read(reinterpret_cast<char*>(bytes), sizeof bytes)) {
    throw SystemError(errno, "cannot read /dev/urandom to make the job token");
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

void preflight(const LaunchConfig& cfg) {
  validate(cfg);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(cfg.master_addr.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    LOCKSTEP_THROW(ConfigError, "--master-addr '", cfg.master_addr,
                   "' does not resolve: ", gai_strerror(rc),
                   " (give an IP address or a host name every node can resolve)");
  }
  ::freeaddrinfo(res);
}

int launch_workers(const LaunchConfig& cfg) {
  preflight(cfg);
  SignalFd sig;  // before any thread starts, so that every thread inherits the mask
  std::map<std::string, std::string> env = cfg.env;
  std::string token = getenv_or_make_token();
  auto store = host_store_if_leader(cfg, token);  // node 0 hosts the rendezvous store
  env["MASTER_ADDR"] = cfg.master_addr;
  env["MASTER_PORT"] = std::to_string(store ? store->port() : cfg.master_port);
  env["LOCKSTEP_STORE_TOKEN"] = token;
  env["NNODES"] = std::to_string(cfg.nnodes);
  env["LOCKSTEP_LAUNCHER"] = "1";

  for (int attempt = 0;; ++attempt) {
    env["LOCKSTEP_RESTART_COUNT"] = std::to_string(attempt);
    // Every node, not only the one hosting the store: workers of one attempt must share keys.
    // (Across nodes, restarts are not yet coordinated: each node counts its own attempts.)
    env["LOCKSTEP_STORE_PREFIX"] = str_cat("attempt", attempt);
    GroupResult r = Group(cfg, env, sig).run();
    if (r.outcome == Outcome::success) return 0;
    note(cfg, r.message);
    if (r.outcome == Outcome::interrupted || attempt >= cfg.max_restarts) {
      if (r.outcome == Outcome::worker_failed && cfg.max_restarts > 0) {
        note(cfg, str_cat("giving up after ", attempt, " restart(s) (--max-restarts=",
                          cfg.max_restarts, ")"));
      }
      return r.exit_code;
    }
    note(cfg, str_cat("restarting all workers (restart ", attempt + 1, " of ",
                      cfg.max_restarts, ")"));
  }
}

}  // namespace lockstep::launch
