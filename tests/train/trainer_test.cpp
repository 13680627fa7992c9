// The Trainer: a run stopped after a checkpoint and resumed ends with bitwise the weights of
// an uninterrupted run (1 and 2 ranks, with gradient accumulation, warm-up and a cosine
// schedule); evaluation counts every test sample once across ranks; a NaN loss stops every
// rank with a clear message; run records and the summary line are written.
#include "lockstep/train/trainer.h"

#include <gtest/gtest.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cmath>
#include <exception>
#include <fstream>
#include <map>
#include <thread>

#include "lockstep/comm/process_group.h"
#include "lockstep/nn/models.h"
#include "lockstep/store/hash_store.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/metrics.h"
#include "lockstep/train/setup.h"
#include "lockstep/data/idx.h"
#include "test_util.h"
#include "trainer_util.h"

namespace lockstep::train {
namespace {

namespace fs = std::filesystem;

using testing::synthetic;

struct ResumeCase {
  int world;
  int64_t grad_accum;
  int64_t stop_after;
};

class Resume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(Resume, StoppedAndResumedEqualsUninterruptedBitwise) {
  const auto [world, accum, stop] = GetParam();
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(100, 1), te = synthetic(30, 2);
  TrainConfig full = small_config(dir / "full");
  full.grad_accum = accum;
  const RunOut a = train(world, full, tr, &te);

  TrainConfig part = full;
  part.run_dir = (dir / "part").string();
  const RunOut b = train(world, part, tr, &te, stop);
  EXPECT_TRUE(b.result.stopped);
  EXPECT_EQ(b.result.steps, stop);
  EXPECT_NE(a.weights, b.weights) << "the stopped run must differ from the full one";

  part.resume = part.run_dir;
  const RunOut c = train(world, part, tr, &te);
  EXPECT_EQ(c.result.steps, a.result.steps);
  ASSERT_EQ(c.weights.size(), a.weights.size());
  EXPECT_TRUE(std::memcmp(c.weights.data(), a.weights.data(), a.weights.size() * 4) == 0)
      << "resumed weights differ from the uninterrupted run";
  EXPECT_EQ(c.result.test_acc, a.result.test_acc);

  // The resumed run's log has each step exactly once.
  std::vector<int64_t> steps;
  for (const auto& r : read_jsonl(fs::path(part.run_dir) / "metrics.jsonl"))
    if (r["kind"] == "step") steps.push_back(r["step"].get<int64_t>());
  ASSERT_EQ(int64_t(steps.size()), a.result.steps);
  for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i], int64_t(i) + 1);
}

// 100 samples: world 1 -> 12 batches of 8 per epoch; world 2 -> 50 per rank, 6 batches
// (with grad_accum 4: a step of 4 micro-batches and a short one of 2, whose checkpoint at
// step 2 the resume's cross-check of sampler offset against step must accept).
INSTANTIATE_TEST_SUITE_P(Trainer, Resume,
                         ::testing::Values(ResumeCase{1, 1, 4}, ResumeCase{1, 2, 4}, ResumeCase{2, 1, 4},
                                           ResumeCase{2, 2, 2}, ResumeCase{2, 1, 6}, ResumeCase{2, 4, 3}),
                         [](const auto& info) {
                           return "world" + std::to_string(info.param.world) + "_accum" +
                                  std::to_string(info.param.grad_accum) + "_stop" +
                                  std::to_string(info.param.stop_after);
                         });

TEST(Trainer, WritesRecordsCheckpointsAndSummary) {
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(100, 1), te = synthetic(37, 2);
  TrainConfig c = small_config(dir / "run");
  c.eval_every = 3;
  const RunOut r = train(2, c, tr, &te);
  EXPECT_EQ(r.result.steps, 12);
  EXPECT_NE(r.output.find("samples/s="), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("test_acc="), std::string::npos) << r.output;
  EXPECT_GT(r.result.samples_per_s, 0);
  int evals = 0;
  for (const auto& rec : read_jsonl(dir / "run" / "metrics.jsonl")) {
    if (rec["kind"] != "eval") continue;
    ++evals;
    EXPECT_EQ(rec["samples"], 37) << "every test sample counted exactly once across ranks";
  }
  EXPECT_EQ(evals, 4) << "every 3 steps (3, 6, 9, 12); the epoch ends (6, 12) are not repeated";
  const auto ckpts = list_checkpoints(dir / "run" / "checkpoints");
  ASSERT_EQ(ckpts.size(), 2u);
  EXPECT_EQ(ckpts.back().filename(), "step-000000012");
  const Checkpoint last = load_checkpoint(ckpts.back());
  EXPECT_EQ(last.manifest.world_size, 2);
  EXPECT_EQ(last.manifest.model, "fmnist-mlp");
  EXPECT_NE(last.optimizer.find("step"), nullptr);
  EXPECT_TRUE(fs::exists(dir / "run" / "run.json"));
}

TEST(Trainer, NanLossStopsEveryRankWithAClearMessage) {
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(64, 1, /*with_nan=*/true);
  TrainConfig c = small_config(dir / "run");
  try {
    train(2, c, tr, nullptr);
    FAIL() << "a NaN input must stop training";
  } catch (const DivergedError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("diverged at step"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Lower the learning rate"), std::string::npos) << msg;
  }
}

TEST(Trainer, ResumingAnotherModelsCheckpointIsRefused) {
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(32, 1);
  TrainConfig c = small_config(dir / "run");
  c.epochs = 1;
  train(1, c, tr, nullptr);
  TrainConfig other = c;
  other.model = "fmnist-cnn";
  other.resume = c.run_dir;
  store::HashStore store;
  auto pg = comm::ProcessGroup::create("native", store, 0, 1);
  auto model = nn::make_model("fmnist-cnn", 1);
  Trainer t(other, *model, tr, nullptr, *pg, {.out = nullptr});
  try {
    t.run();
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint of model 'fmnist-mlp'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lockstep::train

namespace lockstep::train {
namespace {

// Elastic restarts: a checkpoint of 2 workers continues with 1 (the sampler reshards by its
// global offset; not bitwise, but no sample of the epoch is skipped or repeated).
TEST(Trainer, ResumesAtAnotherWorldSize) {
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(100, 1), te = synthetic(20, 2);
  TrainConfig c = small_config(dir / "run");
  c.checkpoint_async = false;
  train(2, c, tr, &te, /*stop_after=*/4);
  c.resume = "auto";
  const RunOut r = train(1, c, tr, &te);
  EXPECT_FALSE(r.result.stopped);
  EXPECT_GT(r.result.steps, 4);
  for (float w : r.weights) ASSERT_TRUE(std::isfinite(w));
  const Checkpoint last = load_checkpoint(*latest_checkpoint(dir / "run" / "checkpoints"));
  EXPECT_EQ(last.manifest.world_size, 1);
  EXPECT_EQ(last.manifest.step, r.result.steps);
}

}  // namespace
}  // namespace lockstep::train

namespace lockstep::train {
namespace {

std::string resume_error(const TrainConfig& c, const data::Dataset& tr) {
  try {
    train(1, c, tr, nullptr);
  } catch (const DataError& e) {
    return e.what();
  }
  return "(resumed without error)";
}

// One worker trains in `run_dir` (synchronous checkpoints) and stops after step 4, which is
// checkpointed; the config it ran with.
TrainConfig stopped_at_step_4(const fs::path& run_dir, const data::Dataset& tr) {
  TrainConfig c = small_config(run_dir);
  c.checkpoint_async = false;
  train(1, c, tr, nullptr, /*stop_after=*/4);
  return c;
}

// Issue 18 §5: a sampler position that does not follow from the step, or was saved for
// another data set, is refused naming state.json and the field (even without its checksum,
// as an older lockstep wrote it: this test removes it).
TEST(Trainer, ResumeCrossChecksTheSamplerAgainstStepAndData) {
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(100, 1);
  TrainConfig c = stopped_at_step_4(dir / "run", tr);
  const fs::path manifest = dir / "run" / "checkpoints" / "step-000000004" / "state.json";
  std::ifstream in(manifest);
  nlohmann::json j = nlohmann::json::parse(in);
  in.close();
  j.erase("manifest_crc32");
  const std::string good = j["state"]["sampler"];
  ASSERT_EQ(good, "epoch=0 offset=32 dataset_size=100 seed=7 shuffle=1");  // 4 steps of 8
  j["state"]["sampler"] = "epoch=0 offset=40 dataset_size=100 seed=7 shuffle=1";
  std::ofstream(manifest) << j.dump(2);
  c.resume = "auto";
  std::string msg = resume_error(c, tr);
  EXPECT_NE(msg.find("state.json: field 'state.sampler' has offset=40 but 'step' 4"), std::string::npos) << msg;
  j["state"]["sampler"] = good;
  std::ofstream(manifest) << j.dump(2);
  msg = resume_error(c, synthetic(96, 1));
  EXPECT_NE(msg.find("state.json: field 'state.sampler' records dataset_size=100 but the training set has 96"),
            std::string::npos) << msg;
}

// Issue 18 §5: resuming a run that already ended says so and changes nothing (it printed a
// summary of no steps: train_loss=nan epochs=0).
TEST(Trainer, ResumingAFinishedRunSaysItIsCompleteAndTouchesNothing) {
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(100, 1);
  TrainConfig c = small_config(dir / "run");
  c.epochs = 1;
  train(1, c, tr, nullptr);
  const auto before = testing::fingerprint(dir / "run");
  c.resume = "auto";
  const RunOut r = train(1, c, tr, nullptr);
  EXPECT_NE(r.output.find("already complete: model=fmnist-mlp is at step 12 of 12"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("nan"), std::string::npos) << r.output;
  EXPECT_TRUE(testing::fingerprint(dir / "run") == before) << "resuming a finished run changed its files";

  // Saved by 2 workers (6 steps of 2 x 8); 1 worker would count 12 steps, but the epoch is done.
  TrainConfig two = small_config(dir / "two");
  two.epochs = 1;
  train(2, two, tr, nullptr);
  two.resume = "auto";
  const RunOut one = train(1, two, tr, nullptr);
  EXPECT_NE(one.output.find("is at step 6, the end of its last epoch"), std::string::npos) << one.output;
  EXPECT_EQ(one.output.find("nan"), std::string::npos) << one.output;
}

// Opens of the files in one directory, by name, seen through inotify (IN_OPEN).
class OpenCounter {
 public:
  explicit OpenCounter(const fs::path& dir) : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
    ok_ = fd_ >= 0 && ::inotify_add_watch(fd_, dir.c_str(), IN_OPEN) >= 0;
  }
  ~OpenCounter() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return ok_; }
  // The opens since the last call, by file name.
  std::map<std::string, int> take() {
    alignas(inotify_event) char buf[1 << 16];
    for (ssize_t n; (n = ::read(fd_, buf, sizeof buf)) > 0;)
      for (ssize_t i = 0; i < n;) {
        const auto* e = reinterpret_cast<const inotify_event*>(buf + i);
        if (e->len > 0 && (e->mask & IN_OPEN)) ++opens_[e->name];
        i += ssize_t(sizeof(inotify_event) + e->len);
      }
    return std::exchange(opens_, {});
  }

 private:
  int fd_;
  bool ok_ = false;
  std::map<std::string, int> opens_;
};

// Rank 0 reads a resumed checkpoint once: choosing the newest intact one reads and checks
// every file, and the trainer restores what was read then. Before, it read the model and the
// optimizer again to restore them (two opens of each).
TEST(Trainer, ResumeReadsTheCheckpointOnce) {
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(100, 1);
  TrainConfig c = stopped_at_step_4(dir / "run", tr);
  OpenCounter opens(dir / "run" / "checkpoints" / "step-000000004");
  ASSERT_TRUE(opens.ok()) << "inotify: " << std::strerror(errno);
  c.resume = "auto";
  const RunOut r = train(1, c, tr, nullptr, /*stop_after=*/6);
  EXPECT_EQ(r.result.steps, 6);  // resumed at 4
  std::map<std::string, int> seen = opens.take();
  EXPECT_EQ(seen["model.safetensors"], 1);
  EXPECT_EQ(seen["optimizer.safetensors"], 1);
}

// A checkpoint that cannot be written stops every rank with the same clear error (never one
// rank alone, which would leave the others waiting in a collective), synchronous or not. The
// checkpoint directory becomes a file after step 1 (at the start it must be a directory:
// checkpoints/HEAD.json records the run's lineage).
TEST(Trainer, FailedCheckpointStopsEveryRank) {
  for (bool async : {false, true}) {
    const auto dir = testing::fresh_dir(async ? "trainer_async" : "trainer_sync");
    const data::Dataset tr = synthetic(64, 1);
    TrainConfig c = small_config(dir / "run");
    c.checkpoint_async = async;
    const auto block = [&](int64_t step) {
      if (step == 1) {
        fs::remove_all(dir / "run" / "checkpoints");
        std::ofstream(dir / "run" / "checkpoints") << "not a directory";
      }
      return false;
    };
    try {
      train(2, c, tr, nullptr, -1, block);
      FAIL() << "async=" << async;
    } catch (const SystemError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("checkpoint failed on rank 0"), std::string::npos) << msg;
      EXPECT_NE(msg.find("cannot create the checkpoint directory"), std::string::npos) << msg;
    }
  }
}

// The checkpoint directory cannot be made at the start: every rank stops before step 1
// with rank 0's reason.
TEST(Trainer, UnwritableCheckpointDirectoryStopsEveryRankAtTheStart) {
  const auto dir = testing::fresh_dir("trainer");
  const data::Dataset tr = synthetic(64, 1);
  TrainConfig c = small_config(dir / "run");
  fs::create_directories(dir / "run");
  std::ofstream(dir / "run" / "checkpoints") << "not a directory";
  EXPECT_THROW(train(2, c, tr, nullptr), std::exception);
  EXPECT_FALSE(fs::exists(dir / "run" / "metrics.jsonl")) << "stopped before any step";
}

}  // namespace
}  // namespace lockstep::train

namespace lockstep::train {
namespace {

// Runs preflight on `world` threads, rank r with configs[r]; returns each rank's error ("" if none).
std::vector<std::string> preflight_errors(const std::vector<TrainConfig>& configs) {
  store::HashStore store;
  const int world = int(configs.size());
  std::vector<std::string> errors(configs.size());
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        preflight(store, r, world, configs[size_t(r)], std::chrono::seconds(20));
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

#define SKIP_WITHOUT_FASHION_MNIST()                                                        \
  if (!data::find_fashion_mnist_dir())                                                       \
  GTEST_SKIP() << "Fashion-MNIST not installed (scripts/install-deps installs it)"

TrainConfig fmnist_config() {
  TrainConfig c;
  c.model = "fmnist-mlp";
  c.train_limit = 200;
  c.test_limit = 50;
  return c;
}

TEST(Preflight, AgreeingRanksPassAndGetTheirData) {
  SKIP_WITHOUT_FASHION_MNIST();
  TrainConfig c = fmnist_config();
  store::HashStore store;
  std::vector<int64_t> sizes(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r)
    threads.emplace_back([&, r] { sizes[size_t(r)] = preflight(store, r, 3, c, std::chrono::seconds(20)).train.size(); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(sizes, std::vector<int64_t>(3, 200));
}

// A rank whose data cannot be read: every rank stops at step 0, the others naming it.
TEST(Preflight, UnreadableDataOnOneRankStopsEveryRankNamingIt) {
  SKIP_WITHOUT_FASHION_MNIST();
  TrainConfig c = fmnist_config();
  std::vector<TrainConfig> cs(3, c);
  cs[2].data_dir = "/nonexistent/fashion";
  auto errors = preflight_errors(cs);
  EXPECT_NE(errors[2].find("/nonexistent/fashion"), std::string::npos) << errors[2];
  for (int r : {0, 1}) {
    EXPECT_NE(errors[size_t(r)].find("pre-flight: rank 2 cannot start"), std::string::npos) << errors[size_t(r)];
    EXPECT_NE(errors[size_t(r)].find("/nonexistent/fashion"), std::string::npos) << errors[size_t(r)];
  }
}

// Ranks started with another backend or batch: every rank stops, naming what differs.
TEST(Preflight, DisagreeingBackendOrBatchStopsEveryRank) {
  SKIP_WITHOUT_FASHION_MNIST();
  TrainConfig c = fmnist_config();
  std::vector<TrainConfig> cs(2, c);
  cs[1].backend = "gloo";
  auto errors = preflight_errors(cs);
  EXPECT_NE(errors[0].find("ranks disagree on backend: rank 0 has native, rank 1 has gloo"), std::string::npos)
      << errors[0];
  EXPECT_NE(errors[1].find("ranks disagree on backend: rank 1 has gloo, rank 0 has native"), std::string::npos)
      << errors[1];
  cs[1] = c;
  cs[1].batch = 32;
  errors = preflight_errors(cs);
  for (const auto& e : errors) EXPECT_NE(e.find("ranks disagree on batch"), std::string::npos) << e;
}

}  // namespace
}  // namespace lockstep::train
