// Metrics JSONL and run.json contents, resume truncation, and the progress output.
#include "lockstep/train/metrics.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "lockstep/core/error.h"
#include "lockstep/train/progress.h"
#include "test_util.h"

namespace lockstep::train {
namespace {

using nlohmann::json;
using testing::fresh_dir;

TEST(Metrics, WritesStepAndEvalRecordsAndRunJson) {
  const auto dir = fresh_dir("metrics");
  {
    MetricsWriter m(dir, true);
    m.write_run_info({{"model", "tiny"}, {"lr", 0.1}}, collect_run_env(2, "native", 4));
    m.log_step({.step = 1, .epoch = 0, .loss = 2.5, .lr = 0.1, .samples_per_s = 100, .time_s = 0.5});
    m.log_step({.step = 2, .epoch = 0, .loss = NAN, .lr = 0.1, .grad_norm = 3.0});
    m.log_eval({.step = 2, .epoch = 0, .loss = 1.5, .accuracy = 0.75, .samples = 40});
  }
  const auto recs = read_jsonl(dir / "metrics.jsonl");
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0]["kind"], "step");
  EXPECT_EQ(recs[0]["step"], 1);
  EXPECT_DOUBLE_EQ(recs[0]["loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(recs[0]["samples_per_s"].get<double>(), 100);
  EXPECT_FALSE(recs[0].contains("grad_norm"));
  EXPECT_TRUE(recs[1]["loss"].is_null()) << "NaN must be logged as null (valid JSON)";
  EXPECT_DOUBLE_EQ(recs[1]["grad_norm"].get<double>(), 3.0);
  EXPECT_EQ(recs[2]["kind"], "eval");
  EXPECT_DOUBLE_EQ(recs[2]["accuracy"].get<double>(), 0.75);
  EXPECT_EQ(recs[2]["samples"], 40);

  std::ifstream f(dir / "run.json");
  const json run = json::parse(f);
  EXPECT_EQ(run["world_size"], 2);
  EXPECT_EQ(run["backend"], "native");
  EXPECT_EQ(run["threads"], 4);
  EXPECT_FALSE(run["hostname"].get<std::string>().empty());
  EXPECT_FALSE(run["lockstep_version"].get<std::string>().empty());
  EXPECT_EQ(run["start_time"].get<std::string>().size(), 20u);
  EXPECT_EQ(run["config"]["model"], "tiny");
}

TEST(Metrics, ResumeDropsRecordsAfterTheCheckpointStep) {
  const auto dir = fresh_dir("metrics");
  {
    MetricsWriter m(dir, true);
    for (int s = 1; s <= 5; ++s) m.log_step({.step = s});
    m.log_eval({.step = 4});
  }
  {
    std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"kind\":\"st";  // torn by a crash
  }
  {
    MetricsWriter m(dir, true, /*resume_step=*/3);
    m.log_step({.step = 4});
  }
  const auto recs = read_jsonl(dir / "metrics.jsonl");
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs.back()["step"], 4);
  EXPECT_EQ(recs[2]["step"], 3);
}

TEST(Metrics, DisabledWriterTouchesNothing) {
  const auto dir = fresh_dir("metrics") / "sub";
  MetricsWriter m(dir, false);
  m.log_step({.step = 1});
  m.write_run_info({}, collect_run_env(1, "x", 1));
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(Metrics, MalformedJsonlNamesFileAndLine) {
  const auto dir = fresh_dir("metrics");
  std::ofstream(dir / "m.jsonl") << "{\"a\":1}\nnot json\n";
  try {
    read_jsonl(dir / "m.jsonl");
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("m.jsonl:2"), std::string::npos) << e.what();
  }
}

std::string capture(bool tty, int steps) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  {
    Progress p(f, steps, true, tty, std::chrono::milliseconds(0));
    for (int s = 1; s <= steps; ++s) p.update(s, 1.0 / s, 500.0);
    p.message("eval acc=0.9");
    p.finish();
  }
  std::fclose(f);
  std::string out(buf, len);
  std::free(buf);
  return out;
}

TEST(Progress, PlainLinesWhenNotATerminal) {
  const std::string out = capture(false, 3);
  EXPECT_NE(out.find("step 3/3"), std::string::npos) << out;
  EXPECT_NE(out.find("samples/s 500"), std::string::npos) << out;
  EXPECT_EQ(out.find('\r'), std::string::npos) << "no carriage returns in logs";
  EXPECT_NE(out.find("eval acc=0.9\n"), std::string::npos);
}

TEST(Progress, BarWhenATerminal) {
  const std::string out = capture(true, 3);
  EXPECT_NE(out.find('\r'), std::string::npos);
  EXPECT_NE(out.find("3/3 loss 0.3333 500 samples/s ETA"), std::string::npos) << out;
  Progress p(nullptr, 10, false);
  const std::string bar = p.bar_text(5, 0.5, 10, 65, 60);
  EXPECT_NE(bar.find("[#####"), std::string::npos) << bar;
  EXPECT_NE(bar.find("ETA 1m05s"), std::string::npos) << bar;
  EXPECT_EQ(Progress::format_duration(3725), "1h02m");
  EXPECT_EQ(Progress::format_duration(NAN), "?");
}

// What a Progress left to decide by itself writes to a pseudo-terminal, as mpirun gives its
// ranks; `rank_env` is set while it runs ("" for none).
std::string on_a_pty(const char* rank_env) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  EXPECT_GE(master, 0);
  EXPECT_EQ(::grantpt(master), 0);
  EXPECT_EQ(::unlockpt(master), 0);
  FILE* f = std::fopen(::ptsname(master), "w");
  EXPECT_NE(f, nullptr);
  if (*rank_env) ::setenv(rank_env, "0", 1);
  {
    Progress p(f, 3, true, std::nullopt, std::chrono::milliseconds(0));
    for (int s = 1; s <= 3; ++s) p.update(s, 1.0 / s, 500.0);
    p.finish();
  }
  if (*rank_env) ::unsetenv(rank_env);
  std::fclose(f);
  std::string out;
  char buf[4096];
  ::fcntl(master, F_SETFL, O_NONBLOCK);
  for (ssize_t n; (n = ::read(master, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  ::close(master);
  return out;
}

// Issue 22: under `lockstep run --via mpirun` the bar's \r and ESC[K went into mpirun's tagged log.
TEST(Progress, NoBarOnTheTerminalOfAnMpirunOrSrunRank) {
  EXPECT_NE(on_a_pty("").find("\x1b[K"), std::string::npos) << "a terminal of its own gets the bar";
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "SLURM_PROCID"}) {
    const std::string out = on_a_pty(v);
    EXPECT_EQ(out.find("\x1b"), std::string::npos) << v << ": " << out;
    EXPECT_NE(out.find("step 3/3"), std::string::npos) << v << ": " << out;
  }
}

}  // namespace
}  // namespace lockstep::train
