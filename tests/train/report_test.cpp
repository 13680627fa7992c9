// `lockstep report`: plots and Markdown from a run's metrics; a clear error without gnuplot.
#include "lockstep/train/report.h"

#include <gtest/gtest.h>

#include <fstream>

#include "lockstep/core/error.h"
#include "lockstep/train/metrics.h"
#include "test_util.h"

namespace lockstep::train {
namespace {

namespace fs = std::filesystem;

fs::path make_run(const std::string& tag) {
  const auto dir = testing::fresh_dir(tag);
  MetricsWriter m(dir, true);
  m.write_run_info({{"model", "tiny-cnn"}}, collect_run_env(2, "native", 1));
  for (int s = 1; s <= 20; ++s)
    m.log_step({.step = s, .epoch = s / 10, .loss = 2.0 / s, .lr = 0.01 * s, .samples_per_s = 1000.0 + s, .time_s = 0.1 * s});
  m.log_eval({.step = 10, .epoch = 1, .loss = 0.5, .accuracy = 0.8, .samples = 100});
  m.log_eval({.step = 20, .epoch = 2, .loss = 0.4, .accuracy = 0.875, .samples = 100});
  return dir;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(Report, WritesPlotsAndMarkdown) {
  if (find_program("gnuplot").empty()) GTEST_SKIP() << "gnuplot not installed (Debian: gnuplot-nox)";
  const auto dir = make_run("report");
  const ReportResult r = write_report(dir);
  EXPECT_EQ(r.plot_error, "");
  ASSERT_EQ(r.plots.size(), 4u);
  for (const auto& p : r.plots) EXPECT_GT(fs::file_size(p), 1000u) << p;
  EXPECT_EQ(r.plots[2].stem(), "learning_rate");
  const std::string md = slurp(r.markdown);
  EXPECT_NE(md.find("tiny-cnn"), std::string::npos) << md;
  EXPECT_NE(md.find("| final test accuracy | 87.50% |"), std::string::npos) << md;
  EXPECT_NE(md.find("samples/s"), std::string::npos) << md;
  EXPECT_NE(md.find("![loss](loss."), std::string::npos) << md;
}

// Issue 22: a learning-rate plot (steps.dat's 4th column), and a throughput axis from 0.
TEST(Report, PlotsTheLearningRateAndThroughputFromZero) {
  const auto dir = make_run("report");
  const ReportResult r = write_report(dir, {.gnuplot = "/bin/true"});  // the script, not the drawing
  EXPECT_EQ(r.plot_error, "");
  EXPECT_NE(slurp(dir / "report" / "steps.dat").find("\n7 0.285714286 1007 0.07\n"), std::string::npos)
      << slurp(dir / "report" / "steps.dat");
  const std::string gp = slurp(dir / "report" / "plots.gp");
  EXPECT_NE(gp.find("set output 'learning_rate.png'\nset title 'learning rate'\nset ylabel 'lr'\n"
                    "plot 'steps.dat' using 1:4"),
            std::string::npos)
      << gp;
  EXPECT_NE(gp.find("set yrange [0:*]\nplot 'steps.dat' using 1:3"), std::string::npos) << gp;
}

TEST(Report, MissingGnuplotIsAClearErrorButMarkdownIsWritten) {
  const auto dir = make_run("report");
  const ReportResult r = write_report(dir, {.gnuplot = "no-such-gnuplot-program"});
  EXPECT_NE(r.plot_error.find("not found"), std::string::npos) << r.plot_error;
  EXPECT_NE(r.plot_error.find("gnuplot-nox"), std::string::npos) << r.plot_error;
  EXPECT_TRUE(r.plots.empty());
  EXPECT_NE(slurp(r.markdown).find("Plots not drawn"), std::string::npos);
}

TEST(Report, NotARunDirectory) {
  const auto dir = testing::fresh_dir("report");
  try {
    write_report(dir);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.jsonl"), std::string::npos);
  }
}

}  // namespace
}  // namespace lockstep::train
