#include "lockstep/launch/launcher.h"

#include <netdb.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>

#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/core/proc_state.h"
#include "lockstep/launch/affinity.h"
#include "lockstep/launch/elastic.h"
#include "lockstep/launch/flight_summary.h"
#include "lockstep/launch/mpirun.h"
#include "lockstep/launch/output.h"
#include "lockstep/launch/store_host.h"
#include "lockstep/launch/subprocess.h"
#include "lockstep/launch/torchrun_env.h"
#include "lockstep/launch/watchdog.h"
#include "lockstep/store/tcp_store.h"

namespace lockstep::launch {
namespace {

void validate(const LaunchConfig& c) {
  if (c.command.empty()) {
    LOCKSTEP_THROW(ConfigError, "no program to run: give it after `--`, e.g. "
                                "`lockstep run --nproc-per-node 2 -- ./trainer --epochs 1`");
  }
  // Once here, with the reason, rather than "exec failed" from every worker.
  const auto path = c.env.find("PATH");
  find_program(c.command[0], path != c.env.end() ? path->second : getenv_opt("PATH").value_or(""));
  if (c.nproc_per_node < 1 || c.nproc_per_node > 1024) {
    LOCKSTEP_THROW(ConfigError, "--nproc-per-node=", c.nproc_per_node, " must be in [1, 1024]");
  }
  if (c.nnodes < 1) LOCKSTEP_THROW(ConfigError, "--nnodes=", c.nnodes, " must be >= 1");
  if (c.min_nodes < 0 || c.min_nodes > c.nnodes)
    LOCKSTEP_THROW(ConfigError, "--nnodes=", c.min_nodes, ":", c.nnodes, " needs 1 <= MIN <= MAX");
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
  if (!c.via.empty() && c.via != "mpirun")
    LOCKSTEP_THROW(ConfigError, "--via ", c.via, ": the only other way to start workers is mpirun");
  resolve_cpu_bind(c.cpu_bind);  // throws on a bad value
  if (c.via == "mpirun" && (c.nnodes > 1 || c.min_nodes > 0)) {
    LOCKSTEP_THROW(ConfigError, "--via mpirun starts the workers of one node (--nnodes 1); across "
                                "hosts, run mpirun with a hostfile yourself (workers read "
                                "OMPI_COMM_WORLD_*)");
  }
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
  int rank;  // -1: mpirun, which starts all the ranks of this node
  int local_rank;
  std::unique_ptr<Subprocess> proc;
  std::unique_ptr<LinePrefixer> out, err;
};

enum class Outcome { success, worker_failed, interrupted, told_to_stop };

// Where this node's workers sit in the job: node index, RANK of the first, WORLD_SIZE.
struct Placement {
  int node_rank, rank_offset, world;
};
// Polled while workers run (elastic): a reason to stop them, if any.
using Watch = std::function<std::optional<std::string>()>;

struct GroupResult {
  Outcome outcome = Outcome::success;
  int exit_code = 0;
  std::string message;
  std::map<int, std::string> notes;  // worker_failed: ranks found stopped or exited by then
};

class Group {
 public:
  Group(const LaunchConfig& cfg, const std::map<std::string, std::string>& env, SignalFd& sig,
        Watchdog& dog, Placement at, Watch watch = {})
      : cfg_(cfg), sig_(sig), dog_(dog), watch_(std::move(watch)) {
    if (cfg.via == "mpirun") {
      start_mpirun(env);
      return;
    }
    const int world = at.world;
    const auto cpus = cpu_partition(cfg.cpu_bind, cfg.nproc_per_node, allowed_cpus());  // resolved in launch_workers
    for (int l = 0; l < cfg.nproc_per_node; ++l) {
      Worker w;
      w.local_rank = l;
      w.rank = at.rank_offset + l;
      auto e = env;
      e["RANK"] = std::to_string(w.rank);
      e["LOCAL_RANK"] = std::to_string(l);
      e["WORLD_SIZE"] = std::to_string(world);
      e["LOCAL_WORLD_SIZE"] = std::to_string(cfg.nproc_per_node);
      e["GROUP_RANK"] = std::to_string(at.node_rank);
      add_torchrun_env(e, cfg, w.rank, world);
      e["OMP_NUM_THREADS"] = e.count("OMP_NUM_THREADS") ? e["OMP_NUM_THREADS"] : "1";
      if (cfg.prefix_output) e["LOCKSTEP_OUTPUT_PREFIXED"] = "1";  // log lines: no second rank tag
      w.proc = std::make_unique<Subprocess>(cfg.command, e, cpus.empty() ? std::vector<int>{} : cpus[size_t(l)]);
      dog_.watch(w.proc->pid());
      std::string prefix = cfg.prefix_output ? str_cat("[rank ", w.rank, "] ") : "";
      w.out = std::make_unique<LinePrefixer>(STDOUT_FILENO, prefix);
      w.err = std::make_unique<LinePrefixer>(STDERR_FILENO, prefix);
      workers_.push_back(std::move(w));
    }
  }

  // Each worker is reaped (its Subprocess kills what is left of its group) before the
  // watchdog forgets the group.
  ~Group() {
    for (auto& w : workers_) {
      const pid_t pid = w.proc->pid();
      w.proc.reset();
      dog_.forget(pid);
    }
  }
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  // One child, mpirun, whose output lines carry the rank tags it adds (mpirun.h).
  void start_mpirun(std::map<std::string, std::string> env) {
    if (!env.count("OMP_NUM_THREADS")) env["OMP_NUM_THREADS"] = "1";
    if (cfg_.prefix_output) env["LOCKSTEP_OUTPUT_PREFIXED"] = "1";
    env = mpirun_environment(std::move(env));
    Worker w{-1, -1, nullptr, nullptr, nullptr};
    w.proc = std::make_unique<Subprocess>(mpirun_command(cfg_.mpirun, cfg_, env), env);
    dog_.watch(w.proc->pid());
    mpirun_out_ = std::make_shared<MpirunOutput>(cfg_.prefix_output);
    auto relay = [out = mpirun_out_](std::string_view line) { return out->line(line); };
    w.out = std::make_unique<LinePrefixer>(STDOUT_FILENO, relay);
    w.err = std::make_unique<LinePrefixer>(STDERR_FILENO, relay);
    workers_.push_back(std::move(w));
  }

  GroupResult run() {
    GroupResult result;
    Deadline kill_at = Deadline::never();  // set once workers are being stopped
    // Once a worker has failed, the others get cfg_.failure_settle to exit on their own
    // before SIGTERM: a failure that every rank has agreed on (a failed checkpoint, a bad
    // batch) is then reported by each, and the rank where it began is not killed first.
    // Stopped workers (SIGSTOP, a debugger) cannot exit, so they are not waited for.
    Deadline term_at = Deadline::never();
    for (;;) {
      // Check exits before deciding to stop: a worker may fail before the first poll.
      bool done = all_done();
      if (int s = sig_.drain(); s != 0 && (result.outcome == Outcome::success || !term_at.is_never())) {
        if (result.outcome == Outcome::success)
          result = {Outcome::interrupted, 128 + s,
                    str_cat("received signal ", s, " (SIG", sigabbrev_np(s),
                            "); forwarded it to all workers"),
                    {}};
        signal_all(s);
        kill_at = Deadline::after(cfg_.grace);
        term_at = Deadline::never();
      }
      if (result.outcome == Outcome::success && record_first_failure(result))
        term_at = Deadline::after(cfg_.failure_settle);
      else if (result.outcome == Outcome::worker_failed && !term_at.is_never())
        prefer_killed_worker(result);  // nobody has been signalled by the launcher yet
      if (!term_at.is_never() && !done && (term_at.expired() || only_stopped_left())) {
        signal_all(SIGTERM);
        kill_at = Deadline::after(cfg_.grace);
        term_at = Deadline::never();
      }
      if (result.outcome == Outcome::success && !done && watch_) {
        if (auto why = watch_()) {
          result = {Outcome::told_to_stop, 1, *why, {}};
          signal_all(SIGTERM);
          kill_at = Deadline::after(cfg_.grace);
        }
      }
      if (done) break;
      if (kill_at.expired()) {
        signal_all(SIGKILL);
        kill_at = Deadline::never();
      }
      const Deadline next = !term_at.is_never() ? term_at : kill_at;
      pump_io(next.is_never() ? (watch_ ? 250 : 1000) : next.poll_timeout_ms());
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
      if (w.rank < 0) return record_mpirun_failure(w, *st, result);
      record_failure(w, *st, result);
      return true;
    }
    return false;
  }

  // A worker killed by a signal that the launcher did not send is where a failure began, not
  // the peer that saw it die and exited with an error: replaces such a recorded peer. The
  // peer may well be reaped first: a killed worker's zombie main thread already tells its
  // peers it is dead, while waitpid() reports it only once its other threads have exited too.
  void prefer_killed_worker(GroupResult& result) {
    if (recorded_killed_) return;
    for (auto& w : workers_) {
      if (w.rank < 0) return;  // mpirun reports its ranks itself
      if (const auto st = w.proc->poll(); st && st->signaled) return record_failure(w, *st, result);
    }
  }

  void record_failure(const Worker& w, const ExitStatus& st, GroupResult& result) {
    recorded_killed_ = st.signaled;
    const std::string stopped = stopped_workers();
    result = {Outcome::worker_failed, st.shell_code(),
              str_cat("worker rank ", w.rank, " (local rank ", w.local_rank, ", pid ", w.proc->pid(), ") ",
                      st.describe(),
                      stopped.empty() ? std::string()
                                      : str_cat(" while worker ", stopped, " was stopped (SIGSTOP or a "
                                                "debugger), which likely caused it"),
                      "; stopped the other workers. See its output above (lines "
                      "prefixed [rank ", w.rank, "])."),
              std::move(notes_)};
  }

  bool record_mpirun_failure(Worker& w, const ExitStatus& st, GroupResult& result) {
    drain(w);  // mpirun's report of the failed rank may still be in the pipes
    const int rank = mpirun_out_->failed_rank();
    const std::string how = mpirun_out_->how().empty() ? "failed" : mpirun_out_->how();
    result = {Outcome::worker_failed, st.shell_code(),
              rank >= 0 ? str_cat("worker rank ", rank, " ", how, " (as mpirun reports); mpirun (pid ",
                                  w.proc->pid(), ") stopped the others and ", st.describe(),
                                  ". See its output above (lines prefixed [rank ", rank, "]).")
                        : str_cat("mpirun (pid ", w.proc->pid(), ") ", st.describe(),
                                  "; see its output above (lines prefixed [mpirun])."),
              {}};
    return true;
  }

  bool all_done() {
    for (auto& w : workers_) {
      if (!w.proc->poll()) return false;
    }
    return true;
  }

  // Stopping signals are followed by SIGCONT: a stopped (SIGSTOP, traced) worker would
  // otherwise keep SIGTERM pending and hold the group for the whole grace period.
  void signal_all(int s) {
    for (auto& w : workers_) {
      // mpirun's ranks are its children in process groups of their own: mpirun stops them on
      // SIGTERM, but when mpirun itself must be killed they would outlive it.
      if (s == SIGKILL && w.rank < 0) kill_children(w.proc->pid());
      w.proc->signal(s);
      if (s == SIGTERM || s == SIGINT || s == SIGHUP) w.proc->signal(SIGCONT);
    }
  }

  // Children of any of its threads (each thread has its own list).
  static void kill_children(pid_t pid) {
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator(str_cat("/proc/", pid, "/task"), ec)) {
      std::ifstream kids(task.path() / "children");
      for (pid_t kid; kids >> kid;) {
        ::kill(-kid, SIGKILL);
        ::kill(kid, SIGKILL);
      }
    }
  }

  // Workers the kernel shows as stopped (state T or t in /proc/PID/stat), named in the
  // failure message: a stopped worker makes its peers time out, and is the likelier cause.
  // Also notes, by rank, which workers were stopped or had exited (for the flight summary).
  std::string stopped_workers() {
    std::string out;
    notes_.clear();
    for (const auto& w : workers_) {
      if (const auto& st = w.proc->status()) notes_[w.rank] = st->describe();
      if (process_stopped(w.proc->pid())) {
        out += str_cat(out.empty() ? "" : ", ", "rank ", w.rank, " (pid ", w.proc->pid(), ")");
        notes_[w.rank] = "stopped (SIGSTOP or a debugger)";
      }
    }
    return out;
  }

  // Whether every worker still running is stopped: none of them can exit on its own.
  bool only_stopped_left() {
    for (auto& w : workers_)
      if (!w.proc->poll() && !process_stopped(w.proc->pid())) return false;
    return true;
  }

  static bool process_stopped(pid_t pid) {
    const char state = proc_state(pid);
    return state == 'T' || state == 't';
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

  // Reads what is left in an exited worker's pipes (bounded: 1000 non-blocking reads; a pipe
  // ends once all its writers are gone).
  void drain(Worker& w) {
    for (int i = 0; i < 1000 && (w.proc->stdout_fd() >= 0 || w.proc->stderr_fd() >= 0); ++i) forward(w);
  }

  void drain_output() {
    for (auto& w : workers_) {
      drain(w);
      w.out->flush();
      w.err->flush();
    }
  }

  const LaunchConfig& cfg_;
  SignalFd& sig_;
  Watchdog& dog_;
  Watch watch_;
  std::vector<Worker> workers_;
  std::map<int, std::string> notes_;
  bool recorded_killed_ = false;  // the failure recorded is a worker killed by a signal
  std::shared_ptr<MpirunOutput> mpirun_out_;
};

void note(const LaunchConfig& cfg, const std::string& msg) {
  if (cfg.log) std::fprintf(cfg.log, "lockstep run: %s\n", msg.c_str());
  if (cfg.log) std::fflush(cfg.log);
}

// After a worker failure, the line naming the rank missing from the collective that failed,
// from what the ranks' flight recorders posted in the store (flight_summary.h); nothing when
// none posted. Bounded (2 s in all, connecting included) and best effort: the workers are gone
// by now, the store is not asked to wait for them. Only the default group: the store cannot
// list keys.
constexpr Millis kFlightBudget{2000};

void note_flight(const LaunchConfig& cfg, store::Store& store, const std::string& prefix, int world,
                 const std::map<int, std::string>& notes, const Deadline& until) {
  const auto left = std::chrono::duration_cast<Millis>(until.remaining());
  const auto reports = read_flight_reports(store, prefix, "default", world, left);
  if (auto line = summarize_flight(reports, "default", notes); !line.empty()) note(cfg, line);
}

void note_flight(const LaunchConfig& cfg, const std::string& host, int port, const std::string& token,
                 const std::string& prefix, int world, const std::map<int, std::string>& notes) {
  const Deadline until = Deadline::after(kFlightBudget);  // shared by the connect and the reads
  try {
    store::TcpStoreOptions so;
    so.host = host;
    so.port = uint16_t(port);
    so.token = token;
    so.connect_timeout = kFlightBudget;
    so.timeout = kFlightBudget;
    store::TcpStore client(so);
    note_flight(cfg, client, prefix, world, notes, until);
  } catch (const std::exception&) {
    // No store to ask (node 0 gone): the workers' own errors are all there is.
  }
}

// Elastic: the launcher meets the other nodes' launchers in rounds (elastic.h) and runs its
// workers in each; failures anywhere end the round everywhere and count as restarts.
int run_elastic(const LaunchConfig& cfg, std::map<std::string, std::string> env, SignalFd& sig,
                Watchdog& dog, bool host) {
  store::TcpStoreOptions so;
  so.host = cfg.master_addr;
  so.port = uint16_t(std::stoi(env["MASTER_PORT"]));
  so.token = env["LOCKSTEP_STORE_TOKEN"];
  so.timeout = cfg.store_timeout;
  store::TcpStore client(so);
  ElasticRendezvous rdzv(client, cfg, host);
  int restarts = 0;
  for (int round = 0;;) {
    Membership m;
    try {
      m = rdzv.join(round);
    } catch (const AbortedError& e) {
      note(cfg, e.what());
      return 0;  // a standby when the job ended: nothing of ours failed
    }
    note(cfg, str_cat("round ", m.round, ": node ", m.node_rank, " of ", m.nodes, ", ranks ", m.rank_offset,
                      "..", m.rank_offset + cfg.nproc_per_node - 1, " of ", m.world));
    env["WORLD_SIZE"] = std::to_string(m.world);
    env["NNODES"] = std::to_string(m.nodes);
    env["LOCKSTEP_RESTART_COUNT"] = std::to_string(m.round);
    env["LOCKSTEP_STORE_PREFIX"] = str_cat("round", m.round);
    std::optional<ElasticRendezvous::Stop> stop;
    GroupResult r = Group(cfg, env, sig, dog, {m.node_rank, m.rank_offset, m.world},
                          [&]() -> std::optional<std::string> {
                            stop = rdzv.should_stop(m);
                            return stop ? std::optional<std::string>(stop->why) : std::nullopt;
                          })
                        .run();
    if (r.outcome == Outcome::success) {
      rdzv.finished(m);
      return 0;
    }
    if (r.outcome == Outcome::interrupted) {
      rdzv.stop_job(str_cat("node ", m.node_rank, ": ", r.message));
      note(cfg, r.message);
      return r.exit_code;
    }
    if (r.outcome == Outcome::worker_failed) rdzv.report_failure(m, r.message);
    note(cfg, str_cat("round ", m.round, " ended: ", r.message));
    if (r.outcome == Outcome::worker_failed) {
      note_flight(cfg, client, env["LOCKSTEP_STORE_PREFIX"], m.world, r.notes,
                  Deadline::after(kFlightBudget));
    }
    if (stop && stop->final) return 1;
    if (r.outcome == Outcome::worker_failed || (stop && stop->counts_as_restart)) {
      if (++restarts > cfg.max_restarts) {
        rdzv.stop_job(str_cat("out of restarts (--max-restarts=", cfg.max_restarts, ") after: ", r.message));
        note(cfg, str_cat("giving up after ", restarts - 1, " restart(s) (--max-restarts=", cfg.max_restarts, ")"));
        return r.outcome == Outcome::worker_failed ? r.exit_code : 1;
      }
    }
    round = m.round + 1;
  }
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

int launch_workers(const LaunchConfig& config) {
  preflight(config);
  // Before any thread starts, so that every thread inherits the mask; and before mpirun's
  // --version is asked, so that a SIGTERM meanwhile waits for the workers' loop (which
  // forwards it) instead of killing the launcher.
  SignalFd sig;
  // Forked before any thread starts, with the signals blocked (a Ctrl-C is the launcher's).
  Watchdog dog(config.remove_if_killed);
  LaunchConfig cfg = config;
  cfg.cpu_bind = resolve_cpu_bind(cfg.cpu_bind);  // "" -> LOCKSTEP_CPU_BIND or auto, once
  if (cfg.via == "mpirun") cfg.mpirun = find_mpirun(cfg.mpirun);
  std::map<std::string, std::string> env = cfg.env;
  std::string token = getenv_or_make_token();
  auto store = host_store_if_leader(cfg, token);  // node 0 hosts the rendezvous store
  env["MASTER_ADDR"] = cfg.master_addr;
  env["MASTER_PORT"] = std::to_string(store ? store->port() : cfg.master_port);
  env["LOCKSTEP_STORE_TOKEN"] = token;
  env["NNODES"] = std::to_string(cfg.nnodes);
  env["LOCKSTEP_LAUNCHER"] = "1";
  if (cfg.min_nodes > 0) return run_elastic(cfg, env, sig, dog, store != nullptr);

  for (int attempt = 0;; ++attempt) {
    env["LOCKSTEP_RESTART_COUNT"] = std::to_string(attempt);
    // Every node, not only the one hosting the store: workers of one attempt must share keys.
    // (Across nodes, restarts are not yet coordinated: each node counts its own attempts.)
    env["LOCKSTEP_STORE_PREFIX"] = str_cat("attempt", attempt);
    GroupResult r =
        Group(cfg, env, sig, dog,
              {cfg.node_rank, cfg.node_rank * cfg.nproc_per_node, cfg.nnodes * cfg.nproc_per_node})
            .run();
    if (r.outcome == Outcome::success) return 0;
    note(cfg, r.message);
    if (r.outcome == Outcome::worker_failed) {
      note_flight(cfg, store ? store->host() : cfg.master_addr, std::stoi(env["MASTER_PORT"]), token,
                  env["LOCKSTEP_STORE_PREFIX"], cfg.nnodes * cfg.nproc_per_node, r.notes);
    }
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
