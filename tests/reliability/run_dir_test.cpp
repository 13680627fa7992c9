// Run directories and what resumes from them (issue 18 §5 and §6, label multiproc): a second
// `lockstep train` started on the run directory of a running job (through the launcher, or as
// a single process) fails at once naming the holder and leaves the running job alone; an
// edited state.json is refused; resuming a finished run says so and changes nothing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "rel_util.h"

namespace lockstep::reliability {
namespace {

const Millis kTimeout{std::chrono::seconds(60)};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(RunDir, SecondJobInTheSameRunDirFailsAtOnceNamingTheHolder) {
  TempDir tmp;
  const fs::path data = tmp.path / "data", run = tmp.path / "run", cfg = tmp.path / "train.toml";
  write_synthetic_fmnist(data, 1024, 64, 3);
  write_text(cfg, small_train_config(data, run, {{"epochs", "1000"}, {"checkpoint_every", "5"}}));
  Job first({LOCKSTEP_BIN, "train", "--config", cfg.string(), "--nproc", "2"});
  const Deadline dl =
      Deadline::after(kTimeout);  // until the first job trains (it holds the lock from its start)
  while (last_logged_step(run / "metrics.jsonl") < 1 && first.running() && !dl.expired())
    ::usleep(2000);
  ASSERT_GE(last_logged_step(run / "metrics.jsonl"), 1) << first.out();
  const std::string holder = str_cat("pid=", first.pid(), " host=");  // the launcher's
  for (const char* nproc : {"2", "1"}) {
    Job second({LOCKSTEP_BIN, "train", "--config", cfg.string(), "--nproc", nproc});
    ASSERT_TRUE(second.wait(kTimeout)) << second.out();
    EXPECT_FALSE(second.status().ok()) << second.out();
    const auto line = second.find_line("is in use by another job");
    ASSERT_TRUE(line) << second.out();
    EXPECT_NE(line->second.find(holder), std::string::npos) << line->second;
    EXPECT_NE(line->second.find("pick another --run-dir"), std::string::npos) << line->second;
    report(str_cat("second job in a running job's run dir (--nproc ", nproc, ")"),
           str_cat("lockstep train --nproc ", nproc,
                   " on the run dir of a running lockstep train --nproc 2"),
           str_cat("\"", line_with(line->second, "", 260), "\", exit ",
                   second.status().shell_code(), "; the first job runs on"),
           line->first, second.elapsed());
  }
  EXPECT_TRUE(first.running()) << first.out();
  const int64_t logged = last_logged_step(run / "metrics.jsonl");
  EXPECT_GT(logged, 0) << first.out();
  const std::string metrics = read_text(run / "metrics.jsonl");
  EXPECT_EQ(metrics.find("}{"), std::string::npos) << "interleaved records in metrics.jsonl";
}

TEST(RunDir, FinishedRunResumesToASayingItIsCompleteAndAnEditedStepIsRefused) {
  TempDir tmp;
  const fs::path data = tmp.path / "data", run = tmp.path / "run", cfg = tmp.path / "train.toml";
  write_synthetic_fmnist(data, 512, 64, 3);
  write_text(cfg, small_train_config(data, run, {{"max_steps", "5"}}));
  const std::vector<std::string> train{LOCKSTEP_BIN, "train",   "--config",
                                       cfg.string(), "--nproc", "2"};
  Job first(train);
  ASSERT_TRUE(first.wait(kTimeout) && first.status().ok()) << first.out();
  const auto before = fingerprint(run);

  std::vector<std::string> resume = train;
  resume.insert(resume.end(), {"--resume", "auto"});
  Job again(resume);
  ASSERT_TRUE(again.wait(kTimeout)) << again.out();
  EXPECT_TRUE(again.status().ok()) << again.out();
  const auto done = again.find_line("already complete");
  ASSERT_TRUE(done) << again.out();
  EXPECT_NE(done->second.find("is at step 5 of 5"), std::string::npos) << done->second;
  EXPECT_EQ(again.out().find("nan"), std::string::npos) << again.out();
  EXPECT_EQ(fingerprint(run), before) << "resuming a finished run changed its files";
  report(
      "resume of a finished run",
      "lockstep train --nproc 2 --resume auto after the run's last step",
      str_cat("\"", line_with(done->second, "lockstep train", 200), "\", exit 0; no file changed"),
      -1, again.elapsed());

  // state.json's step edited 5 -> 3 in a copy (the text, as a user would).
  const fs::path copy = tmp.path / "edited" / "step-000000005";
  fs::create_directories(copy.parent_path());
  fs::copy(*train::latest_checkpoint(run / "checkpoints"), copy);
  std::string text = read_text(copy / "state.json");
  const std::string from = "\"step\": 5", to = "\"step\": 3";
  const size_t at = text.rfind(from);  // the top-level field (after "state", in key order)
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, from.size(), to);
  write_text(copy / "state.json", text);
  std::vector<std::string> edited = train;
  edited.insert(edited.end(),
                {"--resume", copy.string(), "--run-dir", (tmp.path / "run2").string()});
  Job refused(edited);
  ASSERT_TRUE(refused.wait(kTimeout)) << refused.out();
  EXPECT_FALSE(refused.status().ok()) << refused.out();
  const auto line = refused.find_line("'manifest_crc32'");
  ASSERT_TRUE(line) << refused.out();
  EXPECT_NE(line->second.find(copy.string() + "/state.json"), std::string::npos) << line->second;
  report(
      "edited state.json", "step 5 -> 3 in a copy of a checkpoint's state.json, --resume <it>",
      str_cat("\"", line_with(line->second, "", 260), "\", exit ", refused.status().shell_code()),
      line->first, refused.elapsed());
}

}  // namespace
}  // namespace lockstep::reliability
