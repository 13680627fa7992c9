// The command line as torchrun and Lightning users expect it (label multiproc, issue 22),
// through the real `lockstep` program: `lockstep run` takes the program positionally and
// torchrun's spellings; what cannot start (a missing program, a bad value, an unknown model, a
// used run directory) is said once, before any worker starts; every config key is a flag, and
// --print-config writes a file that reads back as the same configuration.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "lockstep/core/error.h"
#include "lockstep/launch/affinity.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/config.h"
#include "lockstep/train/safetensors.h"
#include "rel_util.h"

namespace lockstep::reliability {
namespace {

const Millis kTimeout{std::chrono::seconds(60)};

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    write_synthetic_fmnist(tmp_->path / "data", 512, 64, 3);
  }
  static void TearDownTestSuite() { delete tmp_; }
  static fs::path dir(const std::string& name) { return tmp_->path / name; }

  // Runs `lockstep args...` to its end (bounded) and returns the job.
  static std::unique_ptr<Job> lockstep(std::vector<std::string> args,
                                       const std::map<std::string, std::string>& env = {}) {
    args.insert(args.begin(), LOCKSTEP_BIN);
    auto job = std::make_unique<Job>(args, env);
    EXPECT_TRUE(job->wait(kTimeout)) << "a hang\n" << job->out();
    return job;
  }
  // A failure said once by the launcher, with no worker started; prints the record.
  static std::string expect_said_once(const std::string& name, const std::vector<std::string>& args,
                                      const std::string& needle) {
    const auto job = lockstep(args);
    const std::string out = job->out();
    EXPECT_FALSE(job->status().ok()) << out;
    const size_t at = out.find(needle);
    EXPECT_NE(at, std::string::npos) << "no '" << needle << "' in:\n" << out;
    EXPECT_EQ(at, out.rfind(needle)) << "said more than once:\n" << out;
    EXPECT_EQ(out.find("[rank "), std::string::npos) << "a worker started:\n" << out;
    const auto line = job->find_line(needle);
    report(name, str_cat("lockstep ", args[0], " ..."),
           str_cat("\"", line ? line_with(line->second, "", 260) : "(none)", "\", exit ",
                   job->status().shell_code(), ", no worker started"),
           line ? line->first : -1, -1);
    return out;
  }
  // A small fmnist-mlp config training into dir(name).
  static fs::path config(const std::string& name,
                         const std::map<std::string, std::string>& o = {}) {
    const fs::path p = tmp_->path / (name + ".toml");
    write_text(p, small_train_config(tmp_->path / "data", dir(name), o));
    return p;
  }
  static TempDir* tmp_;
};
TempDir* Cli::tmp_ = nullptr;

// torchrun's form: `lockstep run [OPTIONS] PROGRAM ARGS`, underscore spellings, --standalone,
// --rdzv-id (the job id workers see) and --rdzv-endpoint; etcd and gpu counts refused by name.
TEST_F(Cli, RunTakesTheProgramPositionallyWithTorchrunsSpellings) {
  const auto job = lockstep(
      {"run", "--nproc_per_node=2", "--standalone", "--rdzv_id", "job7", "--max_restarts", "0",
       "sh", "-c",
       "echo \"R=$RANK/$WORLD_SIZE id=$TORCHELASTIC_RUN_ID/$LOCKSTEP_JOB_ID a=$MASTER_ADDR\"",
       "--max-steps", "3"});
  const std::string out = job->out();
  EXPECT_TRUE(job->status().ok()) << out;
  EXPECT_NE(out.find("[rank 0] R=0/2 id=job7/job7 a=127.0.0.1"), std::string::npos) << out;
  EXPECT_NE(out.find("[rank 1] R=1/2 id=job7/job7 a=127.0.0.1"), std::string::npos) << out;
  const auto ep = lockstep({"run", "--nproc-per-node", "2", "--rdzv_endpoint", "localhost:0", "sh",
                            "-c", "echo A=$MASTER_ADDR"});
  EXPECT_NE(ep->out().find("[rank 1] A=localhost"), std::string::npos) << ep->out();
  const auto cpu = lockstep({"run", "--nproc-per-node", "cpu", "sh", "-c", "echo W=$WORLD_SIZE"});
  EXPECT_NE(cpu->out().find(str_cat("W=", std::max<size_t>(1, launch::allowed_cpus().size()))),
            std::string::npos)
      << cpu->out();
  expect_said_once("torchrun flag lockstep has not (--rdzv-backend etcd)",
                   {"run", "--rdzv-backend", "etcd", "--nproc-per-node", "2", "true"}, "etcd");
  expect_said_once("torchrun flag lockstep has not (--nproc-per-node gpu)",
                   {"run", "--nproc-per-node", "gpu", "true"}, "--nproc-per-node gpu");
}

TEST_F(Cli, AProgramThatCannotRunIsNamedOnceWithTheReason) {
  expect_said_once("missing program", {"run", "--nproc-per-node", "2", "--", "./no_such_trainer"},
                   "program './no_such_trainer' cannot be run: No such file or directory");
  const fs::path plain = dir("not_executable.sh");
  write_text(plain, "#!/bin/sh\necho hi\n");
  expect_said_once("program not executable", {"run", "--nproc-per-node", "2", plain.string()},
                   str_cat("program '", plain.string(), "' cannot be run: Permission denied"));
}

// Errors every rank would print alike are printed once, before workers start: by
// `lockstep train --nproc 2`, and by `lockstep run` for `lockstep train` arguments.
TEST_F(Cli, RankIndependentErrorsAreSaidOnceBeforeAnyWorkerStarts) {
  const std::string cfg = config("once").string();
  expect_said_once("unknown model (train --nproc 2)",
                   {"train", "--config", cfg, "--nproc", "2", "--model", "nope"},
                   "'nope' is not one of: fmnist-mlp");
  expect_said_once(
      "unknown model (run ... lockstep train)",
      {"run", "--nproc-per-node", "2", LOCKSTEP_BIN, "train", "--config", cfg, "--model", "nope"},
      "'nope' is not one of: fmnist-mlp");
  expect_said_once(
      "bad flag value (run ... lockstep train)",
      {"run", "--nproc-per-node", "2", LOCKSTEP_BIN, "train", "--config", cfg, "--lr", "inf"},
      "flag --lr: key 'lr' = inf is out of range");
  expect_said_once(
      "misspelt train flag (run ... lockstep train)",
      {"run", "--nproc-per-node", "2", LOCKSTEP_BIN, "train", "--config", cfg, "--max-stepz", "3"},
      "unknown option --max-stepz (did you mean --max-steps?)");
  expect_said_once("mpi backend without mpirun",
                   {"train", "--config", cfg, "--nproc", "2", "--backend", "mpi"},
                   "lockstep run --via mpirun --nproc-per-node 2 lockstep train --backend mpi");
  // A run directory that holds a run: refused by the launcher, not by rank 0 after the start.
  const auto first = lockstep({"train", "--config", cfg, "--nproc", "2", "--max-steps", "4"});
  ASSERT_TRUE(first->status().ok()) << first->out();
  // 4 steps of 2 x 16 samples of 512: a quarter of an epoch, not "epochs=0"
  EXPECT_NE(first->out().find(" epochs=0.25 "), std::string::npos) << first->out();
  expect_said_once("used run dir (train --nproc 2)", {"train", "--config", cfg, "--nproc", "2"},
                   "already holds a run");
  expect_said_once("used run dir (run ... lockstep train)",
                   {"run", "--nproc-per-node", "2", LOCKSTEP_BIN, "train", "--config", cfg},
                   "already holds a run");
}

// Every key of the file has a flag of its name; --print-config's output, fed back with
// --config, is the same configuration.
TEST_F(Cli, EveryKeyIsAFlagAndPrintConfigReadsBack) {
  const auto help = lockstep({"train", "--help"}, {{"COLUMNS", "200"}});
  for (const auto& k : train::config_key_info()) {
    std::string flag = "--" + k.name;
    std::replace(flag.begin(), flag.end(), '_', '-');
    EXPECT_NE(help->out().find(flag), std::string::npos) << flag << "\n" << help->out();
  }
  const auto printed = lockstep({"train", "--config", config("print").string(), "--grad-accum", "2",
                                 "--log-every", "5", "--data", "/x y", "--lr", "0", "--no-shuffle",
                                 "--checkpoint-initial", "--print-config"});
  ASSERT_TRUE(printed->status().ok()) << printed->out();
  const std::string text = printed->out();
  for (const char* kv :
       {"\ngrad_accum = 2\n", "\nlog_every = 5\n", "\ndata_dir = \"/x y\"\n", "\nlr = 0.0\n",
        "\nshuffle = false\n", "\ncheckpoint_initial = true\n", "\nmodel = \"fmnist-mlp\"\n"})
    EXPECT_NE(text.find(kv), std::string::npos) << kv << "\n" << text;
  write_text(dir("printed.toml"), text);
  const auto again =
      lockstep({"train", "--config", dir("printed.toml").string(), "--print-config"});
  EXPECT_EQ(again->out(), text);
  EXPECT_EQ(train::load_config(dir("printed.toml")).to_json(),
            train::parse_config(text, "printed").to_json());
  // docs/training.md shows the complete file: the defaults as --print-config prints them
  std::ifstream doc(fs::path(LOCKSTEP_SOURCE_DIR) / "docs" / "training.md");
  const std::string md((std::istreambuf_iterator<char>(doc)), {});
  const size_t begin = md.find("```toml\n");
  ASSERT_NE(begin, std::string::npos);
  const std::string block = md.substr(begin + 8, md.find("```\n", begin + 8) - begin - 8);
  EXPECT_EQ(block, lockstep({"train", "--print-config"})->out())
      << "docs/training.md is out of date";
}

// Help lines used to run to 483 characters: wrapped to COLUMNS, else 80 (not a terminal here).
TEST_F(Cli, HelpIsWrappedToTheTerminalWidth) {
  for (const auto& [columns, width] :
       std::vector<std::pair<std::string, size_t>>{{"", 80}, {"60", 60}}) {
    for (const char* cmd : {"train", "run", "checkpoints"}) {
      const auto job = lockstep({cmd, "--help"}, {{"COLUMNS", columns}});  // "": the default
      std::istringstream lines(job->out());
      size_t n = 0;
      for (std::string line; std::getline(lines, line); ++n)
        if (line.rfind("Usage:", 0) != 0) EXPECT_LE(line.size(), width) << cmd << ": " << line;
      EXPECT_GT(n, 10u) << job->out();
    }
  }
}

#ifdef LOCKSTEP_BENCH_BUILT
// nccl-tests is the anchor: its type names, flags and op names, no redop for broadcast, no
// raw-TCP column on shared memory, out-of-place and in-place columns, the closing average; a
// bad --op refused before the header.
TEST_F(Cli, BenchCollectivesSpeaksNcclTests) {
  const std::vector<std::string> quick = {"--nproc", "2", "-b",          "8", "-e",         "64",
                                          "-f",      "8", "-n",          "2", "-w",         "1",
                                          "--reps",  "1", "--warmup-ms", "1", "--batch-ms", "1"};
  auto bench = [&](std::vector<std::string> more) {
    std::vector<std::string> args = {"bench", "collectives"};
    args.insert(args.end(), quick.begin(), quick.end());
    args.insert(args.end(), more.begin(), more.end());
    return lockstep(args);
  };
  const auto ar = bench({"--op", "all_reduce_perf", "-d", "float", "-c", "1"});
  const std::string out = ar->out();
  ASSERT_TRUE(ar->status().ok()) << out;
  EXPECT_NE(out.find("out-of-place"), std::string::npos) << out;
  EXPECT_NE(out.find("in-place"), std::string::npos) << out;
  EXPECT_EQ(out.find("rawtcp"), std::string::npos) << out;
  EXPECT_NE(out.find("float    sum     -1      N/A      N/A      N/A      N/A"), std::string::npos)
      << out;
  EXPECT_NE(out.find("# Out of bounds values : 0 OK\n# Avg bus bandwidth    : "), std::string::npos)
      << out;
  const auto bc = bench({"--op", "broadcast", "-d", "bfloat16"});
  EXPECT_NE(bc->out().find(" bfloat16   none      0 "), std::string::npos) << bc->out();
  const auto bad = bench({"--op", "all_reducex"});
  EXPECT_FALSE(bad->status().ok());
  EXPECT_NE(bad->out().find("unknown --op all_reducex"), std::string::npos) << bad->out();
  EXPECT_EQ(bad->out().find("# machine"), std::string::npos) << "header before the check\n"
                                                             << bad->out();
  const auto help = lockstep({"bench", "collectives", "--help"});
  EXPECT_TRUE(help->status().ok()) << help->out();
  for (const char* flag : {"--op", "-b|--min-bytes", "-e|--max-bytes", "-n|--iters", "--transport"})
    EXPECT_NE(help->out().find(flag), std::string::npos) << flag << "\n" << help->out();
}
#endif

std::map<std::string, std::vector<uint8_t>> weights(const fs::path& checkpoint) {
  const fs::path f = checkpoint / "model.safetensors";
  std::map<std::string, std::vector<uint8_t>> out;
  for (auto& t :
       train::decode_safetensors(train::read_file_bounded(f, uint64_t(1) << 30), f.string())
           .tensors)
    out[t.name] = t.bytes;
  return out;
}

// For reproducing a run elsewhere: the initial weights as checkpoint step 0, a fixed sample
// order, and --lr 0 (the weights stay the initial ones: step 0 equals the last step bitwise).
TEST_F(Cli, InitialCheckpointNoShuffleAndLrZero) {
  const auto job =
      lockstep({"train", "--config", config("step0").string(), "--nproc", "2", "--max-steps", "3",
                "--lr", "0", "--checkpoint-initial", "--no-shuffle"});
  ASSERT_TRUE(job->status().ok()) << job->out();
  const fs::path ckpt = dir("step0") / "checkpoints";
  ASSERT_TRUE(fs::exists(ckpt / "step-000000000")) << job->out();
  ASSERT_TRUE(fs::exists(ckpt / "step-000000003")) << job->out();
  EXPECT_EQ(weights(ckpt / "step-000000000"), weights(ckpt / "step-000000003"));
  std::ifstream state(ckpt / "step-000000003" / "state.json");
  std::stringstream s;
  s << state.rdbuf();
  EXPECT_NE(s.str().find("shuffle=0"), std::string::npos) << s.str();
}

}  // namespace
}  // namespace lockstep::reliability
