#include "lockstep/launch/mpirun.h"

#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <regex>

#include "lockstep/core/clock.h"
#include "lockstep/core/error.h"
#include "lockstep/launch/subprocess.h"

namespace lockstep::launch {
namespace {

constexpr const char* kInstallHint =
    "install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin; the mpi backend also needs "
    "libopenmpi-dev at build time) or set LOCKSTEP_MPIRUN to its mpirun";

std::optional<std::string> in_path(const std::string& name, const EnvLookup& lookup) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return name;
    return std::nullopt;
  }
  const std::string path = lookup("PATH").value_or("/usr/local/bin:/usr/bin:/bin");
  for (size_t start = 0; start <= path.size();) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    std::string full = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(full.c_str(), X_OK) == 0) return full;
    start = end + 1;
  }
  return std::nullopt;
}

constexpr int kVersionWaitSeconds = 5;

// `mpirun --version`, bounded: its first line, or nullopt when it gave neither a whole line
// nor the end of its output within kVersionWaitSeconds (a hung or very slow mpirun).
std::optional<std::string> version_line(const std::string& mpirun) {
  Subprocess p({mpirun, "--version"}, {});
  std::string out;
  const Deadline until = Deadline::after(std::chrono::seconds(kVersionWaitSeconds));
  while (p.stdout_fd() >= 0 && out.find('\n') == std::string::npos && !until.expired()) {
    pollfd fd{p.stdout_fd(), POLLIN, 0};
    if (::poll(&fd, 1, until.poll_timeout_ms()) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(p.stdout_fd(), buf, sizeof buf);
    if (n <= 0) p.close_stdout();
    else out.append(buf, size_t(n));
  }
  if (p.stdout_fd() >= 0 && out.find('\n') == std::string::npos) return std::nullopt;
  return out.substr(0, out.find('\n'));
}

void set_default(std::map<std::string, std::string>& env, const EnvLookup& lookup, const std::string& key,
                 const std::string& value) {
  if (!env.count(key) && !lookup(key)) env[key] = value;
}

}  // namespace

std::string find_mpirun(const std::string& given, const EnvLookup& lookup) {
  std::string name = given.empty() ? lookup("LOCKSTEP_MPIRUN").value_or("") : given;
  if (name.empty()) name = "mpirun";
  auto path = in_path(name, lookup);
  if (!path) LOCKSTEP_THROW(ConfigError, "--via mpirun: '", name, "' not found (PATH); ", kInstallHint);
  const auto version = version_line(*path);
  if (!version) {
    LOCKSTEP_THROW(ConfigError, "--via mpirun: ", *path, " did not answer --version within ",
                   kVersionWaitSeconds, " s, so it cannot be checked to be Open MPI's mpirun; ",
                   kInstallHint);
  }
  if (version->find("Open MPI") == std::string::npos && version->find("OpenRTE") == std::string::npos) {
    LOCKSTEP_THROW(ConfigError, "--via mpirun: ", *path, " is not Open MPI's mpirun (its --version says '",
                   *version, "'); ", kInstallHint);
  }
  return *path;
}

std::map<std::string, std::string> mpirun_environment(std::map<std::string, std::string> env,
                                                      const EnvLookup& lookup) {
  for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"}) env[k] = "";
  // The same settings as tests/backends/run_under_mpirun: they hold in containers.
  set_default(env, lookup, "OMPI_MCA_pml", "ob1");
  set_default(env, lookup, "OMPI_MCA_btl", "self,vader");
  set_default(env, lookup, "OMPI_MCA_btl_vader_single_copy_mechanism", "none");
  set_default(env, lookup, "OMPI_MCA_hwloc_base_binding_policy", "none");
  set_default(env, lookup, "OMPI_MCA_rmaps_base_oversubscribe", "1");
  set_default(env, lookup, "OMPI_MCA_plm_rsh_agent", "");
  if (::geteuid() == 0) {
    set_default(env, lookup, "OMPI_ALLOW_RUN_AS_ROOT", "1");
    set_default(env, lookup, "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
  }
  // Open MPI's session directory under TMPDIR holds unix sockets, whose paths must be short.
  if (auto t = lookup("TMPDIR"); t && t->size() > 40 && !env.count("TMPDIR")) env["TMPDIR"] = "/tmp";
  return env;
}

std::vector<std::string> mpirun_command(const std::string& mpirun, const LaunchConfig& cfg,
                                        const std::map<std::string, std::string>& env) {
  std::vector<std::string> argv{mpirun, "--tag-output", "-n", std::to_string(cfg.nproc_per_node)};
  for (const auto& [k, v] : env) {
    // -x NAME exports mpirun's own value: the token never shows on a command line.
    if (!v.empty() && k.rfind("OMPI_", 0) != 0) argv.insert(argv.end(), {"-x", k});
  }
  argv.insert(argv.end(), cfg.command.begin(), cfg.command.end());
  return argv;
}

std::string MpirunOutput::line(std::string_view text) {
  // "[<job>,<rank>]<stdout>:" or "<stderr>:" before each line of a rank: Open MPI 4 writes
  // "[1,0]<stdout>:text"; Open MPI 5 (PRRTE/PMIx) adds a space and may name the job in full,
  // "[prterun-host-123@1,0]<stdout>: text". One space after the tag is taken as part of it
  // (under Open MPI 4 a line of a rank that starts with a space loses that space).
  static const std::regex tag(R"(^\[[^\]]*,(\d+)\]<std(?:out|err)>: ?)");
  std::match_results<std::string_view::const_iterator> m;
  if (std::regex_search(text.begin(), text.end(), m, tag)) {
    const std::string_view rest = text.substr(size_t(m.length(0)));
    return prefix_ ? str_cat("[rank ", m.str(1), "] ", rest) : std::string(rest);
  }
  scan(text);
  return prefix_ ? str_cat("[mpirun] ", text) : std::string(text);
}

// mpirun's reports of the first failure (Open MPI 4; Open MPI 5's prterun names a process
// "[prterun-host-123@1,1]"):
//   "  Process name: [[24974,1],1]" then "  Exit code:    3"
//   "mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed)."
void MpirunOutput::scan(std::string_view text) {
  static const std::regex name(R"(Process name: \[(?:\[\d+,\d+\]|[^\[\],]+),(\d+)\])");
  static const std::regex code(R"(Exit code:\s*(\d+))");
  static const std::regex noticed(R"(process rank (\d+) with PID \d+ on node \S+ exited on (signal \d+(?: \([^)]*\))?))");
  std::match_results<std::string_view::const_iterator> m;
  if (std::regex_search(text.begin(), text.end(), m, noticed) && failed_rank_ < 0) {
    failed_rank_ = std::stoi(m.str(1));
    how_ = str_cat("killed by ", m.str(2));
  } else if (std::regex_search(text.begin(), text.end(), m, name) && failed_rank_ < 0) {
    failed_rank_ = std::stoi(m.str(1));
  } else if (std::regex_search(text.begin(), text.end(), m, code) && failed_rank_ >= 0 && how_.empty()) {
    how_ = str_cat("exited with code ", m.str(1));
  }
}

}  // namespace lockstep::launch
