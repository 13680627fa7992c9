// End-to-end tests of `lockstep run`: real processes, each run bounded by a timeout.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "lockstep/core/error.h"
#include "lockstep/launch/affinity.h"
#include "lockstep/launch/flight_summary.h"
#include "lockstep/launch/mpirun.h"
#include "run_command.h"

namespace lockstep::testing {
namespace {

namespace fs = std::filesystem;
const Millis kTimeout{std::chrono::seconds(60)};

std::vector<std::string> run_args(int nproc, const std::string& script,
                                  std::vector<std::string> extra = {}) {
  std::vector<std::string> a{LOCKSTEP_BIN, "run", "--nproc-per-node", std::to_string(nproc),
                             "--grace", "2"};
  a.insert(a.end(), extra.begin(), extra.end());
  a.insert(a.end(), {"--", "sh", "-c", script});
  return a;
}

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/lockstep-launch-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

std::vector<pid_t> read_pids(const fs::path& dir) {
  std::vector<pid_t> out;
  for (auto& e : fs::directory_iterator(dir)) {
    std::ifstream f(e.path());
    pid_t p;
    if (f >> p) out.push_back(p);
  }
  return out;
}

TEST(Launcher, SetsEnvironmentAndPrefixesOutput) {
  auto r = run_command(
      run_args(3, "echo \"env $RANK/$WORLD_SIZE/$LOCAL_RANK/$LOCAL_WORLD_SIZE "
                  "port=$MASTER_PORT tok=${#LOCKSTEP_STORE_TOKEN}\"; echo err $RANK >&2"),
      kTimeout);
  ASSERT_FALSE(r.timed_out);
  EXPECT_TRUE(r.status.ok()) << r.status.describe() << "\n" << r.err;
  for (int k = 0; k < 3; ++k) {
    std::regex line("\\[rank " + std::to_string(k) + "\\] env " + std::to_string(k) + "/3/" +
                    std::to_string(k) + "/3 port=[1-9][0-9]* tok=32");
    EXPECT_TRUE(std::regex_search(r.out, line)) << r.out;
    EXPECT_NE(r.err.find("[rank " + std::to_string(k) + "] err " + std::to_string(k)),
              std::string::npos)
        << r.err;
  }
}

TEST(CpuBind, PartitionGivesEachWorkerItsOwnContiguousCpus) {
  using launch::cpu_partition;
  const std::vector<int> eight{0, 1, 2, 3, 4, 5, 6, 7}, odd{2, 3, 5, 8, 9};
  EXPECT_EQ(cpu_partition("auto", 2, eight), (std::vector<std::vector<int>>{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(cpu_partition("auto", 3, odd), (std::vector<std::vector<int>>{{2, 3}, {5, 8}, {9}}));
  EXPECT_EQ(cpu_partition("auto", 5, odd), (std::vector<std::vector<int>>{{2}, {3}, {5}, {8}, {9}}));
  EXPECT_TRUE(cpu_partition("auto", 1, eight).empty());  // one worker: nothing to separate
  EXPECT_TRUE(cpu_partition("auto", 6, odd).empty());    // oversubscribed: the scheduler decides
  EXPECT_TRUE(cpu_partition("none", 2, eight).empty());
  EXPECT_EQ(cpu_partition("cores", 3, {4, 6}), (std::vector<std::vector<int>>{{4}, {6}, {4}}));
  EXPECT_EQ(cpu_partition("cores", 1, {4, 6}), (std::vector<std::vector<int>>{{4, 6}}));
  EXPECT_EQ(launch::cpu_list({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(launch::cpu_list({5}), "5");
  EXPECT_THROW(launch::resolve_cpu_bind("numa"), ConfigError);
}

// The CPUs each worker ends up allowed, as /proc reports them, against the partition of the
// CPUs this test may use; --cpu-bind none leaves every worker all of them.
TEST(CpuBind, WorkersRunOnTheirOwnCpus) {
  const std::vector<int> all = launch::allowed_cpus();
  const std::string script = "grep Cpus_allowed_list /proc/self/status";
  auto expect_cpus = [](const CommandResult& r, int rank, const std::string& list) {
    EXPECT_NE(r.out.find("[rank " + std::to_string(rank) + "] Cpus_allowed_list:\t" + list + "\n"), std::string::npos)
        << "rank " << rank << " should run on " << list << "; got:\n"
        << r.out << r.err;
  };
  auto bound = run_command(run_args(2, script), kTimeout);
  ASSERT_FALSE(bound.timed_out);
  ASSERT_TRUE(bound.status.ok()) << bound.status.describe() << "\n" << bound.err;
  const auto parts = launch::cpu_partition("auto", 2, all);
  for (int rank = 0; rank < 2; ++rank)
    expect_cpus(bound, rank, parts.empty() ? launch::cpu_list(all) : launch::cpu_list(parts[size_t(rank)]));
  auto free = run_command(run_args(2, script, {"--cpu-bind", "none"}), kTimeout);
  ASSERT_TRUE(free.status.ok()) << free.status.describe() << "\n" << free.err;
  for (int rank = 0; rank < 2; ++rank) expect_cpus(free, rank, launch::cpu_list(all));
  auto forced = run_command(run_args(3, script), kTimeout, {{"LOCKSTEP_CPU_BIND", "cores"}});
  ASSERT_TRUE(forced.status.ok()) << forced.status.describe() << "\n" << forced.err;
  const auto rr = launch::cpu_partition("cores", 3, all);
  for (int rank = 0; rank < 3; ++rank) expect_cpus(forced, rank, launch::cpu_list(rr[size_t(rank)]));
  auto bad = run_command(run_args(2, "true"), kTimeout, {{"LOCKSTEP_CPU_BIND", "numa"}});
  EXPECT_FALSE(bad.status.ok());
  EXPECT_NE(bad.err.find("LOCKSTEP_CPU_BIND='numa'"), std::string::npos) << bad.err;
}

TEST(Launcher, OneFailureStopsTheOthersAndNamesTheRank) {
  TempDir tmp;
  std::string script = "echo $$ > " + tmp.path.string() +
                       "/$RANK; if [ $RANK = 1 ]; then sleep 0.3; exit 3; fi; exec sleep 1000";
  auto r = run_command(run_args(4, script), kTimeout);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.status.code, 3);
  EXPECT_NE(r.err.find("worker rank 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited with code 3"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 20.0);
  auto pids = read_pids(tmp.path);
  EXPECT_EQ(pids.size(), 4u);
  for (pid_t p : pids) EXPECT_FALSE(alive(p)) << "worker pid " << p << " survived";
}

// A failure the workers agree on ends each of them with its own error; the first to exit must
// not silence the others (the rank where it began may be a moment slower). Workers that do
// not exit are stopped once --failure-settle has passed.
TEST(Launcher, OtherWorkersGetToReportTheirOwnErrorsBeforeBeingStopped) {
  TempDir tmp;
  // Rank 0 speaks 2 s after rank 1 has failed (it waits for rank 1's pid file first): well
  // inside the 3 s settle, and long after a launcher without one has stopped it.
  const std::string script = "echo $$ > " + tmp.path.string() + "/$RANK; case $RANK in 1) exit 3;; 0) until [ -e " +
                             tmp.path.string() +
                             "/1 ]; do sleep 0.01; done; sleep 2; echo own error >&2; "
                             "exit 4;; *) exec sleep 1000;; esac";
  auto r = run_command(run_args(4, script, {"--failure-settle", "3"}), kTimeout);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.status.code, 3) << r.err;  // the first failure decides
  EXPECT_NE(r.err.find("worker rank 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[rank 0] own error"), std::string::npos) << r.err;
  EXPECT_GE(r.seconds, 3.0) << "ranks 2 and 3 never exit on their own";
  EXPECT_LT(r.seconds, 20.0);
  for (pid_t p : read_pids(tmp.path)) EXPECT_FALSE(alive(p)) << "worker pid " << p << " survived";

  // Without the settling time, rank 0 is stopped before it can speak.
  auto now = run_command(run_args(4, script, {"--failure-settle", "0"}), kTimeout);
  ASSERT_FALSE(now.timed_out);
  EXPECT_EQ(now.status.code, 3) << now.err;
  EXPECT_EQ(now.err.find("own error"), std::string::npos) << now.err;
  EXPECT_LT(now.seconds, 3.0);
}

TEST(Launcher, KilledWorkerIsReportedWithItsSignal) {
  auto r = run_command(run_args(2, "if [ $RANK = 0 ]; then kill -9 $$; fi; exec sleep 1000"),
                       kTimeout);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.status.code, 128 + 9);
  EXPECT_NE(r.err.find("worker rank 0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("killed by signal 9 (SIGKILL)"), std::string::npos) << r.err;
  // No collective was pending anywhere: nothing in the store, no flight recorder line.
  EXPECT_EQ(r.err.find("flight recorder"), std::string::npos) << r.err;
}

// A killed worker's peers see it dead from its zombie main thread and exit with their own
// error, and one of them can be reaped before it (waitpid waits for all of a killed worker's
// threads). The report still names the killed worker, as long as it is found killed within
// --failure-settle; rank 1 here stands for the peer that exited first.
TEST(Launcher, KilledWorkerIsNamedWhenAPeerThatSawItDieExitsFirst) {
  const std::string script = "if [ $RANK = 1 ]; then echo peer died >&2; exit 1; fi; sleep 0.3; kill -9 $$";
  auto r = run_command(run_args(2, script, {"--failure-settle", "10"}), kTimeout);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.status.code, 128 + 9) << r.err;
  EXPECT_NE(r.err.find("worker rank 0 (local rank 0, pid"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("killed by signal 9 (SIGKILL); stopped the other workers"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[rank 1] peer died"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 8.0) << "every worker had exited: nothing to wait for (settle 10 s)";

  // Without the settling time the first exit decides.
  auto now = run_command(run_args(2, script, {"--failure-settle", "0"}), kTimeout);
  ASSERT_FALSE(now.timed_out);
  EXPECT_EQ(now.status.code, 1) << now.err;
  EXPECT_NE(now.err.find("worker rank 1 (local rank 1, pid"), std::string::npos) << now.err;
}

// The launcher's own summary of the flight recorders, from the reports in the store.
TEST(FlightSummary, NamesTheRanksMissingFromTheCollective) {
  using launch::FlightReport;
  launch::FlightReports reports{FlightReport{7, 6, ""}, std::nullopt, FlightReport{5, 5, ""},
                                FlightReport{7, 6, ""}};
  EXPECT_EQ(launch::summarize_flight(reports, "default", {{1, "stopped (SIGSTOP or a debugger)"}}),
            "flight recorder: collective #7 (group 'default'): rank(s) 2 never reached it (last "
            "completed #5); rank(s) 1 missing (no report: rank 1 stopped (SIGSTOP or a debugger)); "
            "rank(s) 0, 3 reached it (last completed #6)");
  EXPECT_EQ(launch::summarize_flight({FlightReport{3, 2, "allreduce"}, std::nullopt}, "default"),
            "flight recorder: collective #3 (allreduce, group 'default'): rank(s) 1 missing (no report: "
            "dead, stopped, or waiting in another operation); rank(s) 0 reached it (last completed #2)");
  EXPECT_EQ(launch::summarize_flight({std::nullopt, std::nullopt}, "default"), "");
  EXPECT_EQ(launch::parse_flight_report("12 11 allreduce")->op, "allreduce");
  EXPECT_FALSE(launch::parse_flight_report("garbage"));
  EXPECT_EQ(launch::flight_key("attempt0", "default", 3), "attempt0/lockstep/pg/default/flight/3");
}

// A stopped worker makes its peer's all-reduce time out; the launcher itself then names the
// stopped rank and the collective (the same number as in the peer's own error).
pid_t child_with_rank(pid_t launcher, int rank) {
  std::ifstream kids("/proc/" + std::to_string(launcher) + "/task/" + std::to_string(launcher) + "/children");
  for (pid_t kid; kids >> kid;) {
    std::ifstream env("/proc/" + std::to_string(kid) + "/environ");
    std::string var;
    while (std::getline(env, var, '\0'))
      if (var == "RANK=" + std::to_string(rank)) return kid;
  }
  return -1;
}

TEST(Launcher, FlightRecorderLineNamesTheStoppedRank) {
  static TempDir tmp;
  static pid_t stopped = -1;
  auto r = run_command({LOCKSTEP_BIN, "run", "--nproc-per-node", "2", "--grace", "2", "--", ELASTIC_WORKER,
                        "--seconds", "60", "--timeout", "2", "--ready-file", (tmp.path / "ready").string()},
                       kTimeout, {}, 0.1, [](pid_t launcher) {
                         // Once rank 1 is in its loop of all-reduces (bounded: 30 s), stop it.
                         for (int i = 0; i < 300 && !fs::exists(tmp.path / "ready.1"); ++i) ::usleep(100000);
                         stopped = child_with_rank(launcher, 1);
                         if (stopped > 0) ::kill(stopped, SIGSTOP);
                       });
  ASSERT_FALSE(r.timed_out);
  ASSERT_GT(stopped, 0) << "rank 1's worker not found under the launcher";
  EXPECT_NE(r.status.code, 0);
  std::smatch worker, launcher;
  ASSERT_TRUE(std::regex_search(r.err, worker, std::regex("\\[rank 0\\] .*allreduce #([0-9]+) \\(rank 0")))
      << r.err;
  ASSERT_TRUE(std::regex_search(
      r.err, launcher,
      std::regex("lockstep run: flight recorder: collective #([0-9]+) \\(allreduce, group 'default'\\): rank\\(s\\) 1 "
                 "missing \\(no report: rank 1 stopped \\(SIGSTOP or a debugger\\)\\); rank\\(s\\) 0 "
                 "reached it \\(last completed #([0-9]+)\\)")))
      << r.err;
  EXPECT_EQ(launcher[1].str(), worker[1].str()) << r.err;
  EXPECT_EQ(std::stoll(launcher[2].str()) + 1, std::stoll(launcher[1].str())) << r.err;
  EXPECT_LT(r.seconds, 30.0);
}

TEST(Launcher, ForwardsSigtermToWorkers) {
  static TempDir tmp;
  std::string script = "trap 'echo got > " + tmp.path.string() +
                       "/term.$RANK; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
  auto r = run_command(run_args(2, script), kTimeout, {}, 1.5,
                       [](pid_t launcher) { ::kill(launcher, SIGTERM); });
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.status.code, 128 + SIGTERM) << r.err;
  EXPECT_TRUE(fs::exists(tmp.path / "term.0")) << r.err;
  EXPECT_TRUE(fs::exists(tmp.path / "term.1")) << r.err;
  EXPECT_NE(r.err.find("received signal 15"), std::string::npos) << r.err;
}

TEST(Launcher, RestartsTheGroupUpToMaxRestarts) {
  auto r = run_command(
      run_args(2, "if [ $LOCKSTEP_RESTART_COUNT -lt 2 ] && [ $RANK = 1 ]; then exit 7; fi; "
                  "echo attempt $LOCKSTEP_RESTART_COUNT",
               {"--max-restarts", "3"}),
      kTimeout);
  ASSERT_FALSE(r.timed_out);
  EXPECT_TRUE(r.status.ok()) << r.err;
  EXPECT_NE(r.err.find("restart 2 of 3"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("[rank 0] attempt 2"), std::string::npos) << r.out;

  auto give_up = run_command(run_args(1, "exit 5", {"--max-restarts", "1"}), kTimeout);
  EXPECT_EQ(give_up.status.code, 5);
  EXPECT_NE(give_up.err.find("giving up after 1 restart"), std::string::npos) << give_up.err;
}

TEST(Launcher, RejectsBadUsageWithAHint) {
  auto none = run_command({LOCKSTEP_BIN, "run", "--nproc-per-node", "2"}, kTimeout);
  EXPECT_NE(none.status.code, 0);
  EXPECT_NE(none.err.find("command"), std::string::npos) << none.err;
  auto zero = run_command({LOCKSTEP_BIN, "run", "--nproc-per-node", "0", "--", "true"}, kTimeout);
  EXPECT_NE(zero.status.code, 0);
  EXPECT_NE(zero.err.find("nproc-per-node"), std::string::npos) << zero.err;
  auto missing = run_command({LOCKSTEP_BIN, "run", "--", "/nonexistent/program"}, kTimeout);
  // Issue 22: said once by the launcher, with the reason, before any worker starts.
  EXPECT_EQ(missing.status.code, 1);
  EXPECT_NE(missing.err.find("program '/nonexistent/program' cannot be run: No such file or directory"),
            std::string::npos)
      << missing.err;
  EXPECT_EQ(missing.err.find("[rank"), std::string::npos) << missing.err;
  auto addr = run_command(
      {LOCKSTEP_BIN, "run", "--master-addr", "no-such-host.invalid", "--", "true"}, kTimeout);
  EXPECT_NE(addr.status.code, 0);
  EXPECT_NE(addr.err.find("does not resolve"), std::string::npos) << addr.err;
  auto no_mpirun = run_command(
      {LOCKSTEP_BIN, "run", "--via", "mpirun", "--mpirun", "/nonexistent/mpirun", "--", "true"}, kTimeout);
  EXPECT_NE(no_mpirun.status.code, 0);
  EXPECT_NE(no_mpirun.err.find("apt-get install openmpi-bin"), std::string::npos) << no_mpirun.err;
  auto mpirun_nodes = run_command({LOCKSTEP_BIN, "run", "--via", "mpirun", "--nnodes", "2", "--master-port",
                                   "29500", "--", "true"},
                                  kTimeout, {{"LOCKSTEP_STORE_TOKEN", "x"}});
  EXPECT_NE(mpirun_nodes.status.code, 0);
  EXPECT_NE(mpirun_nodes.err.find("--via mpirun starts the workers of one node"), std::string::npos)
      << mpirun_nodes.err;
}

// --via mpirun with a stand-in mpirun (runs everywhere): tagged output relayed as "[rank N]";
// on SIGTERM an mpirun that does not exit, and a rank in a process group of its own that
// ignores SIGTERM, are both killed after --grace.
TEST(Mpirun, StubbornMpirunAndItsRanksAreKilledAfterGrace) {
  static TempDir tmp;
  static Clock::time_point term_sent;
  const fs::path fake = tmp.path / "mpirun";
  fs::create_directory(tmp.path / "pids");
  {
    std::ofstream f(fake);
    f << "#!/bin/sh\n"
         "[ \"$1\" = --version ] && { echo 'mpirun (Open MPI) 4.1.4'; exit 0; }\n"
         "trap '' TERM\n"
         "setsid sh -c 'trap \"\" TERM; echo $$ > " << (tmp.path / "pids" / "rank").string()
      << "; while :; do sleep 0.05; done' &\n"
         "echo '[1,0]<stdout>:fake rank up'\n"
         "while :; do wait; done\n";
  }
  fs::permissions(fake, fs::perms::owner_all);
  auto r = run_command({LOCKSTEP_BIN, "run", "--via", "mpirun", "--mpirun", fake.string(), "--grace", "1",
                        "--nproc-per-node", "2", "--", "true"},
                       kTimeout, {}, 0, [](pid_t launcher) {
                         // Once the rank has written its pid (so it and the stand-in mpirun
                         // ignore SIGTERM by then; bounded: 30 s), not at a fixed time.
                         for (int i = 0; i < 300 && !fs::exists(tmp.path / "pids" / "rank"); ++i)
                           ::usleep(100000);
                         term_sent = Clock::now();
                         ::kill(launcher, SIGTERM);
                       });
  const double after_term = seconds_since(term_sent);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.status.code, 128 + SIGTERM) << r.err;
  EXPECT_NE(r.out.find("[rank 0] fake rank up"), std::string::npos) << r.out;
  auto pids = read_pids(tmp.path / "pids");
  ASSERT_EQ(pids.size(), 1u);
  auto running = [](pid_t p) {  // a zombie (not yet reaped by its new parent) counts as gone
    std::ifstream f("/proc/" + std::to_string(p) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
  };
  for (int i = 0; i < 50 && running(pids[0]); ++i) ::usleep(20000);
  EXPECT_FALSE(running(pids[0])) << "the rank under the stand-in mpirun survived";
  EXPECT_LT(after_term, 10.0) << "the launcher took that long to stop after SIGTERM (--grace 1)";
}

// An mpirun that does not answer --version is named as such, not as "not Open MPI's".
TEST(Mpirun, SilentVersionProbeIsNamed) {
  TempDir tmp;
  const fs::path fake = tmp.path / "mpirun";
  {
    std::ofstream f(fake);
    f << "#!/bin/sh\nexec sleep 30\n";
  }
  fs::permissions(fake, fs::perms::owner_all);
  auto r = run_command({LOCKSTEP_BIN, "run", "--via", "mpirun", "--mpirun", fake.string(), "--", "true"},
                       kTimeout);
  ASSERT_FALSE(r.timed_out);
  EXPECT_NE(r.status.code, 0);
  EXPECT_NE(r.err.find("did not answer --version within 5 s"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 15.0);
}

// mpirun's tagged output relayed as the launcher's own, and its report of the failed rank.
TEST(Mpirun, RelaysTaggedOutputAndNotesTheFailedRank) {
  launch::MpirunOutput out(true);
  EXPECT_EQ(out.line("[1,3]<stdout>:hello [x]"), "[rank 3] hello [x]");
  EXPECT_EQ(out.line("[2,0]<stderr>:"), "[rank 0] ");
  EXPECT_EQ(out.line("  Process name: [[24974,1],1]"), "[mpirun]   Process name: [[24974,1],1]");
  EXPECT_EQ(out.failed_rank(), 1);
  out.line("  Exit code:    3");
  EXPECT_EQ(out.how(), "exited with code 3");
  launch::MpirunOutput sig(false);
  EXPECT_EQ(sig.line("[1,1]<stdout>:plain"), "plain");
  sig.line("mpirun noticed that process rank 2 with PID 0 on node vm exited on signal 9 (Killed).");
  EXPECT_EQ(sig.failed_rank(), 2);
  EXPECT_EQ(sig.how(), "killed by signal 9 (Killed)");
  // Open MPI 5 (PRRTE/PMIx): a space after the tag, the job possibly named in full.
  launch::MpirunOutput five(true);
  EXPECT_EQ(five.line("[prterun-vm-4242@1,2]<stdout>: hello"), "[rank 2] hello");
  EXPECT_EQ(five.line("[1,0]<stderr>:  indented"), "[rank 0]  indented");
  five.line("   Process name: [prterun-vm-4242@1,1]");
  five.line("   Exit code:    4");
  EXPECT_EQ(five.failed_rank(), 1);
  EXPECT_EQ(five.how(), "exited with code 4");

  launch::LaunchConfig cfg;
  cfg.nproc_per_node = 3;
  cfg.command = {"./trainer", "--backend", "mpi"};
  auto env = launch::mpirun_environment({{"MASTER_PORT", "1234"}, {"LOCKSTEP_STORE_TOKEN", "t"}},
                                        [](std::string_view k) -> std::optional<std::string> {
                                          if (k == "OMPI_MCA_btl") return "self,tcp";
                                          return std::nullopt;
                                        });
  EXPECT_EQ(env["RANK"], "");  // a worker must take its rank from OMPI_COMM_WORLD_RANK
  EXPECT_EQ(env["OMPI_MCA_pml"], "ob1");
  EXPECT_EQ(env.count("OMPI_MCA_btl"), 0u);  // the user's setting stands
  // Open MPI refuses root without --allow-run-as-root; these machines run as root (issue 22)
  if (::geteuid() == 0) {
    EXPECT_EQ(env["OMPI_ALLOW_RUN_AS_ROOT"], "1");
  }
  EXPECT_EQ(launch::mpirun_command("mpirun", cfg, env),
            (std::vector<std::string>{"mpirun", "--tag-output", "-n", "3", "-x", "LOCKSTEP_STORE_TOKEN", "-x",
                                      "MASTER_PORT", "./trainer", "--backend", "mpi"}));
}

TEST(Launcher, SelfcheckWorkersMeetThroughTheStore) {
  auto r = run_command({LOCKSTEP_BIN, "run", "--nproc-per-node", "4", "--", LOCKSTEP_BIN,
                        "selfcheck", "--timeout", "30"},
                       kTimeout);
  ASSERT_FALSE(r.timed_out);
  EXPECT_TRUE(r.status.ok()) << r.err;
  EXPECT_NE(r.out.find("4 worker(s) met"), std::string::npos) << r.out;
  for (int k = 0; k < 4; ++k) {
    EXPECT_NE(r.out.find("rank " + std::to_string(k) + ": host"), std::string::npos) << r.out;
  }
  EXPECT_NE(r.out.find("selfcheck: ok"), std::string::npos) << r.out;
}

// A worker's log line carries its rank once: the launcher's tag, or (--no-prefix) the log's.
TEST(Launcher, LogLinesCarryTheRankOnce) {
  const std::map<std::string, std::string> debug{{"LOCKSTEP_LOG_LEVEL", "debug"}};
  auto tagged = run_command({LOCKSTEP_BIN, "run", "--nproc-per-node", "2", "--", LOCKSTEP_BIN,
                             "selfcheck", "--timeout", "30"},
                            kTimeout, debug);
  ASSERT_FALSE(tagged.timed_out);
  EXPECT_TRUE(tagged.status.ok()) << tagged.err;
  const std::regex once("\\[rank 1\\] \\[[0-9:.]+ D\\] connecting to the store");
  EXPECT_TRUE(std::regex_search(tagged.err, once)) << tagged.err;
  EXPECT_EQ(tagged.err.find("[rank 1] [rank 1"), std::string::npos) << tagged.err;

  auto plain = run_command({LOCKSTEP_BIN, "run", "--no-prefix", "--nproc-per-node", "2", "--",
                            LOCKSTEP_BIN, "selfcheck", "--timeout", "30"},
                           kTimeout, debug);
  ASSERT_FALSE(plain.timed_out);
  EXPECT_TRUE(plain.status.ok()) << plain.err;
  EXPECT_TRUE(std::regex_search(plain.err, std::regex("\\[rank 1 [0-9:.]+ D\\] connecting to the store")))
      << plain.err;
}

TEST(Launcher, SelfcheckWithoutLauncherTimesOutWithAClearError) {
  // Rank 1 of 2 alone: rank 0 (which would host the store) never comes.
  auto r = run_command({LOCKSTEP_BIN, "selfcheck", "--timeout", "1"}, kTimeout,
                       {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                        {"MASTER_PORT", "1"}, {"LOCKSTEP_STORE_TOKEN", "x"}});
  ASSERT_FALSE(r.timed_out);
  EXPECT_NE(r.status.code, 0);
  EXPECT_NE(r.err.find("127.0.0.1:1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lockstep::testing
