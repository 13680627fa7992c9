// Run directories and what resumes from them (issue 18 §5, label multiproc): an edited
// state.json is refused; resuming a finished run says so and changes nothing.
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
