// Bad input to the real `lockstep` command (label multiproc): corrupt and truncated data
// files, checkpoints from another model, of another world size or corrupt, invalid TOML,
// unknown flags, a port already in use, a wrong store token, ranks started with different
// configurations, and collectives called out of order. Each must end in a clear error and a
// non-zero exit, and must leave the files of an earlier run exactly as they were.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "rel_util.h"

namespace lockstep::reliability {
namespace {

using Overrides = std::map<std::string, std::string>;
const Millis kTimeout{std::chrono::seconds(60)};

// One finished 2-rank run (5 steps, checkpoint at the end) whose directory every case checks
// is left untouched.
class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    write_synthetic_fmnist(data(), 512, 64, 3);
    write_text(tmp_->path / "good.toml",
               small_train_config(data(), saved_run(), {{"max_steps", "5"}}));
    Job job(
        {LOCKSTEP_BIN, "train", "--config", (tmp_->path / "good.toml").string(), "--nproc", "2"});
    ASSERT_TRUE(job.wait(kTimeout)) << job.out();
    ASSERT_TRUE(job.status().ok()) << job.out();
  }
  static void TearDownTestSuite() { delete tmp_; }
  static fs::path data() { return tmp_->path / "data"; }
  static fs::path saved_run() { return tmp_->path / "saved"; }
  static fs::path checkpoint() { return *train::latest_checkpoint(saved_run() / "checkpoints"); }

  void SetUp() override {
    ASSERT_NE(tmp_, nullptr);
    before_ = fingerprint(saved_run());
    ASSERT_FALSE(before_.empty());
  }
  void TearDown() override {
    EXPECT_EQ(fingerprint(saved_run()), before_) << "the saved run was touched";
  }

  // A config file for this case (training into the saved run's directory unless overridden).
  fs::path config(const std::string& name, Overrides o = {}) const {
    const fs::path p = tmp_->path / (name + ".toml");
    write_text(p, small_train_config(data(), saved_run(), o));
    return p;
  }
  // Runs argv to its end (bounded), checks a non-zero exit and that the output has `needle`;
  // prints the record with the line that holds `needle`.
  std::string expect_error(const std::string& name, const std::string& injected,
                           const std::vector<std::string>& argv, const std::string& needle,
                           const Overrides& env = {}) {
    Job job(argv, env);
    EXPECT_TRUE(job.wait(kTimeout)) << "a hang\n" << job.out();
    const std::string out = job.out();
    EXPECT_FALSE(job.status().ok()) << out;
    const auto line = job.find_line(needle);
    EXPECT_TRUE(line) << "no line with '" << needle << "' in:\n" << out;
    report(name, injected,
           str_cat("\"", line ? line_with(line->second, "", 260) : "(none)", "\", exit ",
                   job.status().shell_code()),
           line ? line->first : -1, job.elapsed());
    return out;
  }
  std::vector<std::string> train(const fs::path& cfg, std::vector<std::string> extra = {}) const {
    std::vector<std::string> a{LOCKSTEP_BIN, "train", "--config", cfg.string()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // `lockstep run` of 2 workers, each running `script` under sh (with $LOCKSTEP, $CFG set).
  std::vector<std::string> run_sh(const fs::path& cfg, const std::string& script) const {
    return {LOCKSTEP_BIN,
            "run",
            "--nproc-per-node",
            "2",
            "--grace",
            "2",
            "--",
            "sh",
            "-c",
            str_cat("LOCKSTEP=", LOCKSTEP_BIN, "; CFG=", cfg.string(), "; ", script)};
  }

  static TempDir* tmp_;
  std::map<std::string, std::string> before_;
};
TempDir* BadInput::tmp_ = nullptr;

// A copy of the good data set with `file` changed by `edit`.
fs::path broken_data(const fs::path& root, const std::string& name, const std::string& file,
                     void (*edit)(std::string&)) {
  const fs::path dir = root / name;
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(root / "data"))
    fs::copy_file(e.path(), dir / e.path().filename());
  std::ifstream in(dir / file, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  edit(bytes);
  write_text(dir / file, bytes);
  return dir;
}

TEST_F(BadInput, TruncatedDataFileStopsEveryRankInPreflight) {
  const fs::path d = broken_data(tmp_->path, "truncated", "train-images-idx3-ubyte",
                                 [](std::string& b) { b.resize(b.size() / 2 + 3); });
  const std::string out = expect_error(
      "truncated data file",
      "train-images-idx3-ubyte cut to half its size, --nproc 2 --resume auto",
      train(config("truncated",
                   {{"data_dir", str_cat("\"", d.string(), "\"")}, {"resume", "\"auto\""}}),
            {"--nproc", "2"}),
      "] lockstep: error:");
  EXPECT_NE(out.find("train-images-idx3-ubyte: truncated"), std::string::npos) << out;
}

TEST_F(BadInput, CorruptDataFileHeaderIsNamed) {
  const fs::path d = broken_data(tmp_->path, "badmagic", "train-labels-idx1-ubyte",
                                 [](std::string& b) { b[2] = char(0x0d); });
  const std::string out = expect_error(
      "corrupt data file (IDX header)",
      "type byte of train-labels-idx1-ubyte set to 0x0d (float), --nproc 2",
      // --resume auto: the saved run's directory, which a new run may not use (refused first)
      train(config("badmagic", {{"data_dir", str_cat("\"", d.string(), "\"")}, {"resume", "\"auto\""}}),
            {"--nproc", "2"}),
      "] lockstep: error:");
  EXPECT_NE(out.find("train-labels-idx1-ubyte: "), std::string::npos) << out;
}

TEST_F(BadInput, CheckpointOfAnotherModelIsRefused) {
  const std::string out = expect_error(
      "checkpoint of another model", "--model fmnist-cnn --resume <fmnist-mlp checkpoint>",
      train(
          config("othermodel", {{"run_dir", str_cat("\"", (tmp_->path / "other").string(), "\"")}}),
          {"--model", "fmnist-cnn", "--resume", checkpoint().string(), "--nproc", "2"}),
      "checkpoint of model");
  EXPECT_NE(out.find("fmnist-mlp"), std::string::npos) << out;
}

TEST_F(BadInput, CorruptCheckpointIsRefusedAndLeftAsItIs) {
  const fs::path copy = tmp_->path / "corrupt-ckpt";
  fs::copy(checkpoint(), copy, fs::copy_options::recursive);
  {
    std::fstream f(copy / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-7, std::ios::end);
    f.put('\x5a');
  }
  const auto corrupt = fingerprint(copy);
  const std::string out = expect_error(
      "corrupt checkpoint", "one byte of model.safetensors changed, --resume <it>",
      train(config("corrupt", {{"run_dir", str_cat("\"", (tmp_->path / "other2").string(), "\"")}}),
            {"--resume", copy.string(), "--nproc", "2"}),
      "CRC-32");
  EXPECT_EQ(fingerprint(copy), corrupt);
}

TEST_F(BadInput, CheckpointOfAnotherWorldSizeResumesWithAWarning) {
  // By design (elastic restarts): weights are replicated, so a checkpoint loads at any world
  // size; the sampler reshards and the run says it is not bitwise that of an uninterrupted one.
  Job job(
      train(config("world1", {{"run_dir", str_cat("\"", (tmp_->path / "world1").string(), "\"")},
                              {"max_steps", "8"}}),
            {"--resume", checkpoint().string(), "--nproc", "1"}));
  ASSERT_TRUE(job.wait(kTimeout)) << job.out();
  EXPECT_TRUE(job.status().ok()) << job.out();
  const auto warn = job.find_line("resuming a checkpoint of world size 2 with 1 workers");
  ASSERT_TRUE(warn) << job.out();
  report("checkpoint of another world size", "checkpoint of a 2-rank run, --resume <it> --nproc 1",
         str_cat("accepted by design (elastic), with \"", line_with(warn->second, "resuming", 200),
                 "\", exit 0"),
         -1, job.elapsed());
}

TEST_F(BadInput, InvalidTomlNamesFileAndLine) {
  const fs::path bad_type = tmp_->path / "badtype.toml";
  write_text(bad_type, "model = \"fmnist-mlp\"\nepochs = 1\nlr = \"fast\"\n");
  expect_error("invalid config (wrong type)", "lr = \"fast\" on line 3", train(bad_type),
               str_cat(bad_type.string(), ":3: key 'lr' must be a number"));
  const fs::path bad_syntax = tmp_->path / "badsyntax.toml";
  write_text(bad_syntax, "model = \"fmnist-mlp\"\nepochs = = 2\n");
  expect_error("invalid config (syntax)", "epochs = = 2 on line 2", train(bad_syntax),
               str_cat(bad_syntax.string(), ":2:"));
  const fs::path unknown = tmp_->path / "unknownkey.toml";
  write_text(unknown, "model = \"fmnist-mlp\"\nlearning_rate = 0.1\n");
  expect_error("invalid config (unknown key)", "learning_rate = 0.1 on line 2", train(unknown),
               str_cat(unknown.string(), ":2: unknown key 'learning_rate'"));
}

TEST_F(BadInput, UnknownFlagsAreRefused) {
  expect_error("unknown flag (train)", "lockstep train --epoch 2",
               {LOCKSTEP_BIN, "train", "--epoch", "2"},
               "unknown option --epoch (did you mean --epochs?)");
  expect_error("unknown flag (run)", "lockstep run --nprocs 2 -- true",
               {LOCKSTEP_BIN, "run", "--nprocs", "2", "--", "true"},
               "unknown option --nprocs (did you mean --nproc-per-node?)");
}

// Issue 18: values a config file could not hold, given as flags, were checked only by the
// workers, which named the launcher's hidden (and by then deleted) .launch-<pid>.toml, once
// per worker. The launcher refuses them before any worker starts, naming the flag, once.
TEST_F(BadInput, FlagValuesOutOfRangeAreRefusedByTheLauncherNamingTheFlag) {
  const fs::path cfg =
      config("flagrange", {{"run_dir", str_cat("\"", (tmp_->path / "flagrange").string(), "\"")}});
  for (const auto& [flag, value] :
       std::vector<std::pair<std::string, std::string>>{{"--lr", "inf"},
                                                        {"--epochs", "1000000000"},
                                                        {"--batch", "100000000000"},
                                                        {"--checkpoint-every", "-1"}}) {
    const std::string out =
        expect_error(str_cat("flag out of range (", flag, ")"),
                     str_cat("lockstep train --nproc 2 ", flag, " ", value),
                     train(cfg, {"--nproc", "2", flag, value}), str_cat("flag ", flag, ": "));
    EXPECT_EQ(out.find(".launch-"), std::string::npos) << out;
    EXPECT_EQ(out.find("[rank "), std::string::npos) << "a worker started\n" << out;
    EXPECT_EQ(out.find("out of range"), out.rfind("out of range")) << "printed more than once\n"
                                                                   << out;
  }
}

TEST_F(BadInput, RunDirThatCannotBeCreatedIsAClearError) {
  for (const char* nproc : {"1", "2"})
    expect_error(str_cat("run dir that cannot be created (--nproc ", nproc, ")"),
                 "--run-dir /proc/lockstep-run",
                 train(config(str_cat("rundir", nproc)),
                       {"--run-dir", "/proc/lockstep-run", "--nproc", nproc}),
                 "/proc/lockstep-run");
}

TEST_F(BadInput, PortAlreadyInUseIsNamed) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  expect_error(
      "port already in use",
      str_cat("127.0.0.1:", port, " held by a listening socket; lockstep run --master-port ", port),
      {LOCKSTEP_BIN, "run", "--master-port", std::to_string(port), "--nproc-per-node", "2", "--",
       "true"},
      str_cat(":", port));
  ::close(fd);
}

TEST_F(BadInput, WrongStoreTokenIsRefusedAndNamed) {
  const std::string out = expect_error(
      "wrong store token",
      "rank 1 started with LOCKSTEP_STORE_TOKEN=wrong (lockstep run, 2 x lockstep train)",
      run_sh(config("token", {{"run_dir", str_cat("\"", (tmp_->path / "token").string(), "\"")}}),
             "if [ \"$RANK\" = 1 ]; then export LOCKSTEP_STORE_TOKEN=wrong; fi; exec $LOCKSTEP "
             "train --config $CFG"),
      "[rank 1] lockstep: error:");
  EXPECT_NE(out.find("worker rank 1"), std::string::npos) << out;
  EXPECT_NE(out.find("token"), std::string::npos) << out;
}

TEST_F(BadInput, RanksWithDifferentConfigsStopInPreflight) {
  const fs::path cfg =
      config("mismatch", {{"run_dir", str_cat("\"", (tmp_->path / "mismatch").string(), "\"")}});
  expect_error("mismatched config across ranks (lr)", "rank r started with --lr 0.0(r+1)",
               run_sh(cfg, "exec $LOCKSTEP train --config $CFG --lr 0.0$((RANK + 1))"),
               "ranks disagree on lr");
  expect_error("mismatched models across ranks", "rank 1 started with --model fmnist-cnn",
               run_sh(cfg,
                      "M=fmnist-mlp; [ \"$RANK\" = 1 ] && M=fmnist-cnn; exec $LOCKSTEP train "
                      "--config $CFG --model $M"),
               "ranks disagree on model");
}

TEST_F(BadInput, CollectivesOutOfOrderAreNamedInDebugMode) {
  const std::string out =
      expect_error("collectives out of order",
                   "rank 0 all-reduces while rank 1 broadcasts (LOCKSTEP_DEBUG=detail)",
                   {LOCKSTEP_BIN, "run", "--nproc-per-node", "2", "--grace", "2", "--", REL_HELPER,
                    "out-of-order"},
                   "rel_helper: ", {{"LOCKSTEP_DEBUG", "detail"}});
  EXPECT_NE(out.find("broadcast"), std::string::npos) << out;
  EXPECT_NE(out.find("allreduce"), std::string::npos) << out;
  EXPECT_EQ(out.find("without an error"), std::string::npos) << out;
}

}  // namespace
}  // namespace lockstep::reliability
