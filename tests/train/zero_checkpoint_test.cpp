// ZeRO stage 1 in `lockstep train` and its checkpoints: the shard files tile the optimizer
// state by global flat offsets and their union is bitwise the state the ranks hold; a
// checkpoint of 4 ranks loads at 4, 3, 2 and 1 (every rank's slice bitwise the saved piece);
// a resume at the same world size ends bitwise equal to an uninterrupted run; ZeRO and plain
// checkpoints convert both ways; a missing, corrupt or inconsistent shard is refused naming
// the file, on every rank, and nothing saved is touched; a non-finite gradient on one rank
// skips the step on every rank. Ranks are threads (as trainer_test).
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <thread>

#include "lockstep/comm/process_group.h"
#include "lockstep/ddp/ddp.h"
#include "lockstep/ddp/zero_optimizer.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/store/hash_store.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/checkpoint_checks.h"
#include "lockstep/train/train_state.h"
#include "lockstep/train/trainer.h"
#include "lockstep/train/zero_checkpoint.h"
#include "test_util.h"

namespace lockstep::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::fingerprint;
using testing::synthetic;

// Runs fn(rank, pg) on `world` thread ranks; rethrows the first rank's error, and reports
// every rank's error text in `errors` when given.
void run_ranks(int world, const std::function<void(int, comm::ProcessGroup&)>& fn,
               std::vector<std::string>* errors = nullptr) {
  store::HashStore store;
  std::vector<std::exception_ptr> failed(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        auto pg = comm::ProcessGroup::create("native", store, r, world,
                                             {.timeout = std::chrono::seconds(30), .algorithm = "ring"});
        fn(r, *pg);
      } catch (...) {
        failed[size_t(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  if (errors) {
    errors->assign(size_t(world), "");
    for (int r = 0; r < world; ++r) {
      if (!failed[size_t(r)]) continue;
      try {
        std::rethrow_exception(failed[size_t(r)]);
      } catch (const std::exception& e) {
        (*errors)[size_t(r)] = e.what();
      }
    }
    return;
  }
  for (auto& e : failed)
    if (e) std::rethrow_exception(e);
}

TrainConfig zero_config(const fs::path& run_dir) {
  TrainConfig c;
  c.model = "fmnist-mlp";
  c.run_dir = run_dir.string();
  c.epochs = 2;
  c.batch = 8;
  c.lr = 0.05;
  c.momentum = 0.9;
  c.weight_decay = 1e-4;
  c.warmup_steps = 2;
  c.schedule = "cosine";
  c.checkpoint_every = 2;
  c.checkpoint_keep = 0;
  c.checkpoint_async = false;
  c.log_every = 1;
  c.seed = 7;
  c.prefetch = 1;
  c.zero = true;
  return c;
}

struct RunOut {
  std::vector<float> weights;  // rank 0's final parameters
  TrainResult result;
};

RunOut train(int world, const TrainConfig& cfg, const data::Dataset& tr, int64_t stop_after = -1) {
  RunOut out;
  run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
    auto model = nn::make_model(cfg.model, cfg.seed);
    TrainerHooks hooks{.out = nullptr, .tty = false};
    if (stop_after > 0) hooks.stop_after = [=](int64_t s) { return s == stop_after; };
    Trainer t(cfg, *model, tr, nullptr, pg, hooks);
    TrainResult res = t.run();
    if (r == 0) {
      out.result = res;
      auto p = model->flat_params();
      out.weights.assign(p.begin(), p.end());
    }
  });
  return out;
}

// One thread rank: fmnist-mlp under DDP without gradient sync, and a ZeroOptimizer on it.
struct ZeroRank {
  std::unique_ptr<nn::Model> model = nn::make_model("fmnist-mlp", 7);
  ddp::DistributedDataParallel ddp;
  ddp::ZeroOptimizer zero;
  nn::CrossEntropyLoss ce;
  nn::Tensor x;
  int rank, world;

  explicit ZeroRank(comm::ProcessGroup& pg)
      : ddp(*model, pg, {.gradient_sync = false, .deterministic = true}),
        zero(pg, ddp.params(), {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f}),
        rank(pg.rank()),
        world(pg.size()) {}

  // Forward and backward of this rank's 8 samples of `step`: local gradients, not yet reduced.
  void backward(const data::Dataset& tr, int step) {
    const int64_t first = (int64_t(step) * world + rank) * 8;
    x.resize(nn::Shape{8, 1, 28, 28});
    std::vector<int32_t> y;
    for (int64_t i = 0; i < 8; ++i) {
      auto f = tr.f32_features(first + i);
      std::copy(f.begin(), f.end(), x.data() + i * 784);
      y.push_back(tr.targets(first + i)[0]);
    }
    model->zero_grad();
    ce.forward(ddp.forward(x), y);
    ddp.backward(ce.backward());
  }
};

bool bitwise_equal(std::span<const float> a, std::span<const float> b) {
  // memcmp must not see a null pointer, even for zero bytes (an empty slice has none).
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
}

// The union of a checkpoint's shard files, read independently of zero_checkpoint.cpp: each
// file's "momentum_buffer" placed at the [begin, end) that state.zero records for it.
std::vector<float> union_of_shards(const Checkpoint& c) {
  const json& z = c.manifest.state.at("zero");
  std::vector<float> full(z.at("total").get<size_t>(), NAN);
  std::vector<bool> seen(full.size());
  for (const json& s : z.at("shards")) {
    const SafetensorsData d = load_checkpoint_file(c, s.at("file").get<std::string>());
    const std::vector<float> v = d.find("momentum_buffer")->to_floats();
    const size_t b = s.at("begin").get<size_t>(), e = s.at("end").get<size_t>();
    EXPECT_EQ(v.size(), e - b) << s.dump();
    for (size_t i = b; i < e; ++i) {
      EXPECT_FALSE(seen[i]) << "element " << i << " in two shards";
      seen[i] = true;
      full[i] = v[i - b];
    }
  }
  for (size_t i = 0; i < seen.size(); ++i)
    if (!seen[i]) ADD_FAILURE() << "element " << i << " in no shard";
  return full;
}

// A ZeRO run of 4 ranks stopped after step 4 (checkpoints at 2 and 4); returns step 4's path.
fs::path zero_checkpoint_of_4_ranks(const fs::path& dir, const data::Dataset& tr) {
  TrainConfig c = zero_config(dir / "saved");
  train(4, c, tr, /*stop_after=*/4);
  const auto p = latest_checkpoint(dir / "saved" / "checkpoints");
  EXPECT_TRUE(p.has_value());
  EXPECT_EQ(p->filename(), "step-000000004");
  return *p;
}

// ---- the shards are the state ------------------------------------------------------------

// ZeroOptimizer trained a few steps at world 3 and 4 (N mod 4 = 2: a tail every rank holds);
// what gather_zero_state writes tiles [0, N) and its union is bitwise the state all-gathered
// in memory from the ranks.
TEST(ZeroCheckpoint, ShardUnionEqualsTheAllGatheredStateBitwise) {
  const data::Dataset tr = synthetic(96, 1);
  ASSERT_EQ(nn::make_model("fmnist-mlp", 7)->num_params() % 4, 2) << "535818 mod 4: a tail every rank holds";
  for (int world : {3, 4}) {
    const auto dir = testing::fresh_dir("zero_w" + std::to_string(world));
    std::vector<float> gathered;
    run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
      ZeroRank rank(pg);
      nn::Model* model = rank.model.get();
      ddp::DistributedDataParallel& d = rank.ddp;
      ddp::ZeroOptimizer& zero = rank.zero;
      EXPECT_EQ(zero.tail_range().size(), world == 4 ? 2u : 0u);
      for (int step = 0; step < 3; ++step) {
        rank.backward(tr, step);
        EXPECT_TRUE(zero.step());
      }
      // The reference: every slice all-gathered, then the tail (each rank's copy: identical).
      const ddp::FlatRange mine = zero.state_range(), tail = zero.tail_range();
      std::vector<float> full(zero.total());
      pg.allgather(zero.state(mine).data(), full.data(), mine.size(), DType::f32).wait();
      const auto t = zero.state(tail);
      std::copy(t.begin(), t.end(), full.begin() + std::ptrdiff_t(tail.begin));
      std::vector<float> tail0(t.begin(), t.end());
      pg.broadcast(std::span<float>(tail0), 0).wait();
      EXPECT_TRUE(bitwise_equal(tail0, t)) << "rank " << r << "'s tail differs from rank 0's";

      const ZeroSnapshot zs = gather_zero_state(pg, zero, d.params(), std::chrono::seconds(30));
      if (r != 0) return;
      EXPECT_EQ(zs.files.size(), size_t(world));
      gathered = full;
      float step[1] = {3.0f};
      CheckpointSave s{.model = "fmnist-mlp", .step = 3, .world_size = world, .weights = model_views(*model),
                       .optimizer = {tensor_view<float>("step", step, {1})}, .extra_files = zs.files};
      s.state["zero"] = zs.section;
      save_checkpoint(dir, s);
    });
    const Checkpoint c = load_checkpoint(dir / "step-000000003");
    ASSERT_EQ(c.manifest.state["zero"]["shards"].size(), size_t(world));
    for (const json& s : c.manifest.state["zero"]["shards"])
      EXPECT_TRUE(c.manifest.files.count(s["file"].get<std::string>())) << "shard not in the manifest: " << s;
    const std::vector<float> shards = union_of_shards(c);
    EXPECT_TRUE(bitwise_equal(shards, gathered)) << "world " << world;
    // And as a run without ZeRO loads it: per-parameter buffers at their offsets.
    const SafetensorsData plain = assemble_zero_state(c);
    for (const json& p : c.manifest.state["zero"]["params"]) {
      const auto v = plain.find(p[0].get<std::string>() + ".momentum_buffer")->to_floats();
      EXPECT_TRUE(bitwise_equal(v, std::span<const float>(gathered).subspan(p[1].get<size_t>(), p[2].get<size_t>())))
          << p;
    }
  }
}

// ---- non-finite gradients ------------------------------------------------------------

// The gradient element at global flat offset k (in ZeroOptimizer's flat order).
float& grad_at(ddp::ParamSource& params, const ddp::ZeroOptimizer& zero, size_t k) {
  for (size_t i = 0; i < params.num_params(); ++i) {
    const size_t lo = zero.param_offset(i);
    if (k >= lo && k < lo + params.grad(i).size()) return params.grad(i)[k - lo];
  }
  throw std::out_of_range("no parameter holds flat offset " + std::to_string(k));
}

// An Inf or NaN put into one rank's local gradient lands, averaged, in some rank's slice (its
// own or another's) or in the tail: step() returns false on every rank, and no rank changes
// its weights or momentum; the next finite step updates all of them alike. Driven as the
// trainer drives any optimizer (DistributedDataParallel::step on an nn::Optimizer&), which
// counts the declined steps as skipped.
TEST(ZeroOptimizer, NonFiniteGradientOnOneRankSkipsTheStepOnEveryRank) {
  const data::Dataset tr = synthetic(96, 1);
  const int world = 4;
  struct Bad {
    int rank;      // the rank whose local gradient is damaged
    int owner;     // the rank whose slice holds it; -1: the tail
    float value;
  };
  const std::vector<Bad> cases = {{1, 2, INFINITY}, {0, 0, NAN}, {3, -1, -INFINITY}};
  run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
    ZeroRank rank(pg);
    nn::Model* model = rank.model.get();
    ddp::DistributedDataParallel& d = rank.ddp;
    ddp::ZeroOptimizer& zero = rank.zero;
    nn::Optimizer& opt = zero;
    EXPECT_TRUE(opt.reduces_gradients());
    EXPECT_EQ(zero.tail_range().size(), 2u);
    int step = 0;
    auto backward = [&] { rank.backward(tr, step++ % 3); };
    auto momentum = [&] {
      std::vector<float> m;
      for (const ddp::FlatRange range : {zero.state_range(), zero.tail_range()}) {
        const auto s = zero.state(range);
        m.insert(m.end(), s.begin(), s.end());
      }
      return m;
    };
    backward();
    EXPECT_TRUE(d.step(opt)) << "rank " << r;  // some momentum to keep
    for (const Bad& bad : cases) {
      backward();
      const std::vector<float> w0(model->flat_params().begin(), model->flat_params().end()), m0 = momentum();
      if (r == bad.rank) {
        const size_t shard = zero.state_range().size();
        const size_t k = bad.owner < 0 ? zero.tail_range().begin + 1 : size_t(bad.owner) * shard + shard / 2;
        grad_at(d.params(), zero, k) = bad.value;
      }
      EXPECT_FALSE(d.step(opt)) << "rank " << r << ", damaged on rank " << bad.rank;
      EXPECT_TRUE(bitwise_equal(model->flat_params(), w0)) << "rank " << r << " changed its weights";
      EXPECT_TRUE(bitwise_equal(momentum(), m0)) << "rank " << r << " changed its momentum";
    }
    EXPECT_EQ(zero.skipped_steps(), int64_t(cases.size()));
    EXPECT_EQ(d.skipped_steps(), int64_t(cases.size()));
    EXPECT_EQ(opt.steps(), 1);  // "step" counts only the steps taken
    backward();
    const std::vector<float> w0(model->flat_params().begin(), model->flat_params().end());
    EXPECT_TRUE(d.step(opt)) << "rank " << r;
    EXPECT_FALSE(bitwise_equal(model->flat_params(), w0)) << "rank " << r << ": a finite step must update";
    std::vector<float> w(model->flat_params().begin(), model->flat_params().end());
    for (float v : w) ASSERT_TRUE(std::isfinite(v)) << "rank " << r;
    pg.broadcast(std::span<float>(w), 0).wait();
    EXPECT_TRUE(bitwise_equal(model->flat_params(), w)) << "rank " << r << "'s replica differs from rank 0's";
  });
}

// In the trainer a NaN input stops every rank: the message says truthfully that the weights
// were not updated and suggests nothing ZeRO refuses (clip); every checkpoint saved before it
// holds finite weights, and the replicas are still equal.
TEST(ZeroTrainer, NonFiniteStepStopsEveryRankWithTheWeightsUnchanged) {
  const auto dir = testing::fresh_dir("zero");
  const data::Dataset tr = synthetic(64, 1, /*with_nan=*/true);
  TrainConfig c = zero_config(dir / "run");
  c.checkpoint_every = 1;
  std::vector<std::vector<float>> weights(2);
  std::vector<std::string> errors;
  run_ranks(2, [&](int r, comm::ProcessGroup& pg) {
    auto model = nn::make_model(c.model, c.seed);
    try {
      Trainer(c, *model, tr, nullptr, pg, {.out = nullptr, .tty = false}).run();
    } catch (const DivergedError&) {
      weights[size_t(r)].assign(model->flat_params().begin(), model->flat_params().end());
      throw;
    }
  }, &errors);
  for (const std::string& e : errors) {
    EXPECT_NE(e.find("training diverged at step"), std::string::npos) << e;
    EXPECT_NE(e.find("the weights were not updated"), std::string::npos) << e;
    EXPECT_EQ(e.find("clip"), std::string::npos) << "ZeRO refuses clip: " << e;
  }
  ASSERT_FALSE(weights[0].empty());
  for (float v : weights[0]) ASSERT_TRUE(std::isfinite(v));
  EXPECT_TRUE(bitwise_equal(weights[0], weights[1])) << "the replicas differ after the skipped step";
  if (!fs::exists(dir / "run" / "checkpoints")) return;  // diverged at the first step
  for (const fs::path& p : list_checkpoints(dir / "run" / "checkpoints")) {
    const Checkpoint ck = load_checkpoint(p);
    for (const StoredTensor& t : ck.weights.tensors)
      for (float v : t.to_floats()) ASSERT_TRUE(std::isfinite(v)) << p << " " << t.name;
  }
}

// ---- elastic resume ----------------------------------------------------------------------

// A checkpoint of 4 ZeRO ranks loads at 4 (same), 3, 2 (fewer) and, without ZeRO, at 1: every
// rank's slice and tail are bitwise the corresponding piece of the saved state.
TEST(ZeroCheckpoint, LoadsAtAnyWorldSizeEachSliceBitwiseTheSavedPiece) {
  const auto dir = testing::fresh_dir("zero");
  const data::Dataset tr = synthetic(96, 1);
  const Checkpoint c = load_checkpoint(zero_checkpoint_of_4_ranks(dir, tr));
  EXPECT_EQ(c.manifest.world_size, 4);
  const std::vector<float> saved = union_of_shards(c);
  for (int world : {4, 3, 2}) {
    std::vector<size_t> covered(static_cast<size_t>(world));
    run_ranks(world, [&](int r, comm::ProcessGroup& pg) {
      auto model = nn::make_model("fmnist-mlp", 7);
      ddp::ModelParams params(*model);
      ddp::ZeroOptimizer zero(pg, params, {.lr = 0.05f, .momentum = 0.9f});
      restore_zero_optimizer(zero, params, c);
      for (const ddp::FlatRange range : {zero.state_range(), zero.tail_range()}) {
        EXPECT_TRUE(bitwise_equal(zero.state(range), std::span<const float>(saved).subspan(range.begin, range.size())))
            << "world " << world << " rank " << r << " [" << range.begin << ", " << range.end << ")";
      }
      covered[size_t(r)] = zero.state_range().size();
    });
    EXPECT_GT(covered[0], 0u);
  }
  // A run without ZeRO: nn::Sgd's per-parameter buffers, assembled from all shards.
  auto model = nn::make_model("fmnist-mlp", 7);
  nn::Sgd sgd(*model, {.lr = 0.05f, .momentum = 0.9f});
  restore_optimizer(sgd, assemble_zero_state(c), c.path.string());
  size_t n = 0;
  for (nn::Parameter* p : model->parameters()) {
    for (const nn::NamedSpan& s : sgd.state())
      if (s.name == p->name() + ".momentum_buffer") {
        EXPECT_TRUE(bitwise_equal(s.values, std::span<const float>(saved).subspan(p->value_offset(), s.values.size())))
            << s.name;
        n += s.values.size();
      }
  }
  EXPECT_EQ(n, saved.size());
  EXPECT_EQ(sgd.steps(), 4);
}

// Stopped after step 4 and resumed at the same world size (4), a ZeRO run ends with bitwise
// the weights and optimizer state of an uninterrupted one.
TEST(ZeroTrainer, ResumedAtTheSameWorldSizeEqualsUninterruptedBitwise) {
  const auto dir = testing::fresh_dir("zero");
  const data::Dataset tr = synthetic(96, 1);
  const TrainConfig full = zero_config(dir / "full");
  const RunOut a = train(4, full, tr);
  EXPECT_EQ(a.result.steps, 6);
  zero_checkpoint_of_4_ranks(dir, tr);
  TrainConfig part = zero_config(dir / "saved");
  part.resume = "auto";
  const RunOut b = train(4, part, tr);
  EXPECT_EQ(b.result.steps, a.result.steps);
  EXPECT_TRUE(bitwise_equal(b.weights, a.weights)) << "resumed weights differ from the uninterrupted run";
  const Checkpoint ca = load_checkpoint(*latest_checkpoint(dir / "full" / "checkpoints"));
  const Checkpoint cb = load_checkpoint(*latest_checkpoint(dir / "saved" / "checkpoints"));
  EXPECT_EQ(ca.manifest.step, 6);
  EXPECT_EQ(cb.manifest.step, 6);
  EXPECT_TRUE(bitwise_equal(union_of_shards(cb), union_of_shards(ca))) << "optimizer state differs";
  // "step" counts the steps taken, across the resume, as in checkpoints saved before ZeRO was
  // an nn::Optimizer (then the trainer wrote its own step there).
  for (const Checkpoint* ck : {&ca, &cb}) {
    ASSERT_NE(ck->optimizer.find("step"), nullptr);
    EXPECT_EQ(ck->optimizer.find("step")->to_floats(), std::vector<float>{6.0f}) << ck->path;
  }
}

// Elastic: the 4-rank ZeRO checkpoint continues with 2 ZeRO workers and with 1 plain worker;
// a plain checkpoint continues under ZeRO, each rank taking its slice of the per-parameter
// momentum.
TEST(ZeroTrainer, ResumesWithFewerWorkersAndBetweenZeroAndPlain) {
  const auto dir = testing::fresh_dir("zero");
  const data::Dataset tr = synthetic(96, 1);
  const fs::path ckpt = zero_checkpoint_of_4_ranks(dir, tr);
  for (const bool zero : {true, false}) {
    TrainConfig c = zero_config(dir / (zero ? "two" : "one"));
    c.zero = zero;
    c.resume = ckpt.string();
    const RunOut r = train(zero ? 2 : 1, c, tr);
    EXPECT_FALSE(r.result.stopped);
    EXPECT_GT(r.result.steps, 4);
    for (float w : r.weights) ASSERT_TRUE(std::isfinite(w));
    const Checkpoint last = load_checkpoint(*latest_checkpoint(dir / (zero ? "two" : "one") / "checkpoints"));
    EXPECT_EQ(last.manifest.world_size, zero ? 2 : 1);
    EXPECT_EQ(is_zero_checkpoint(last), zero);
  }
  // Plain (world 2) -> ZeRO (world 3): slices equal the saved per-parameter buffers.
  TrainConfig plain = zero_config(dir / "plain");
  plain.zero = false;
  train(2, plain, tr, /*stop_after=*/4);
  const Checkpoint pc = load_checkpoint(*latest_checkpoint(dir / "plain" / "checkpoints"));
  ASSERT_FALSE(is_zero_checkpoint(pc));
  run_ranks(3, [&](int r, comm::ProcessGroup& pg) {
    auto model = nn::make_model("fmnist-mlp", 7);
    ddp::ModelParams params(*model);
    ddp::ZeroOptimizer zero(pg, params, {.lr = 0.05f, .momentum = 0.9f});
    restore_zero_optimizer(zero, params, pc);
    std::vector<float> flat(zero.total(), NAN);
    for (size_t i = 0; i < params.num_params(); ++i) {
      const auto v = pc.optimizer.find(params.param_info(i).name + ".momentum_buffer")->to_floats();
      std::copy(v.begin(), v.end(), flat.begin() + std::ptrdiff_t(zero.param_offset(i)));
    }
    for (const ddp::FlatRange range : {zero.state_range(), zero.tail_range()})
      EXPECT_TRUE(bitwise_equal(zero.state(range), std::span<const float>(flat).subspan(range.begin, range.size())))
          << "rank " << r;
  });
  TrainConfig z = zero_config(dir / "plain_to_zero");
  z.resume = pc.path.string();
  const RunOut r = train(3, z, tr);
  EXPECT_FALSE(r.result.stopped);
  EXPECT_GT(r.result.steps, 4);
}

// ZeRO checkpoints follow the lineage rules (lineage.h): a rollback to step 4 of a run that
// reached 8 rotates only the new lineage (A's 8 stays, A's 6 moves to branches/ when the new
// lineage saves its own 6), and `--resume auto` passes over a checkpoint with a damaged shard
// to the newest intact one of the current lineage, ending bitwise as an uninterrupted run.
TEST(ZeroTrainer, RollbackAndADamagedShardFollowTheLineageRules) {
  const auto dir = testing::fresh_dir("zero");
  const data::Dataset tr = synthetic(96, 1);
  auto config = [&](const fs::path& run, int64_t max_steps, int64_t every) {
    TrainConfig c = zero_config(run);
    c.schedule = "constant";  // the same learning rates whatever max_steps is
    c.max_steps = max_steps;
    c.checkpoint_every = every;
    c.checkpoint_keep = 3;
    return c;
  };
  const fs::path run = dir / "run", ckpt = run / "checkpoints";
  train(2, config(run, 8, 2), tr);
  TrainConfig back = config(run, 6, 1);
  back.resume = (ckpt / "step-000000004").string();
  train(2, back, tr);
  std::vector<std::string> names;
  for (const auto& p : list_checkpoints(ckpt)) names.push_back(p.filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"step-000000004", "step-000000005", "step-000000006",
                                             "step-000000008"}));
  ASSERT_EQ(list_checkpoints(ckpt / "branches" / load_checkpoint(ckpt / "step-000000008").manifest.lineage.id)
                .size(), 1u);
  testing::corrupt_byte(ckpt / "step-000000006" / "zero-shard-00001-of-00002.safetensors", 3);
  TrainConfig cont = config(run, 8, 1);
  cont.resume = "auto";
  const RunOut r = train(2, cont, tr);
  std::ifstream info(run / "run.json");
  EXPECT_EQ(fs::path(json::parse(info)["resumed_from"].get<std::string>()).filename(), "step-000000005");
  const RunOut straight = train(2, config(dir / "straight", 8, 2), tr);
  EXPECT_TRUE(bitwise_equal(r.weights, straight.weights)) << "4 + 1 + 3 steps differ from 8 uninterrupted";
}

// ---- bad shards --------------------------------------------------------------------------

// The message a ZeRO resume at `world` ranks gives on each rank ("" when it loads).
std::vector<std::string> resume_errors(const fs::path& ckpt, int world, const data::Dataset& tr,
                                       const fs::path& run_dir) {
  TrainConfig c = zero_config(run_dir);
  c.resume = ckpt.string();
  std::vector<std::string> errors;
  run_ranks(world, [&](int, comm::ProcessGroup& pg) {
    auto model = nn::make_model(c.model, c.seed);
    Trainer(c, *model, tr, nullptr, pg, {.out = nullptr, .tty = false}).run();
  }, &errors);
  return errors;
}

void edit_manifest(const fs::path& ckpt, const std::function<void(json&)>& edit) {
  std::ifstream in(ckpt / "state.json");
  json j = json::parse(in);
  in.close();
  edit(j);
  // Re-summed, as a crafted manifest would be, so that the layout checks behind the checksum are reached.
  j[kManifestChecksumKey] = manifest_checksum(j);
  std::ofstream(ckpt / "state.json") << j.dump(2);
}

TEST(ZeroCheckpoint, BadShardsAreRefusedOnEveryRankNamingTheFileAndNothingIsTouched) {
  const auto dir = testing::fresh_dir("zero");
  const data::Dataset tr = synthetic(96, 1);
  const fs::path good = zero_checkpoint_of_4_ranks(dir, tr);
  struct Case {
    std::string name;
    std::function<void(const fs::path&)> damage;
    std::vector<std::string> expect;  // in the error of the rank that reads the bad part
  };
  const std::string shard1 = "zero-shard-00001-of-00004.safetensors";
  const std::vector<Case> cases = {
      {"corrupt", [&](const fs::path& p) { testing::corrupt_byte(p / shard1, 3); },
       {shard1, "CRC-32", "resume from an older checkpoint"}},
      {"truncated", [&](const fs::path& p) { fs::resize_file(p / shard1, fs::file_size(p / shard1) - 8); },
       {shard1, "truncated"}},
      {"missing", [&](const fs::path& p) { fs::remove(p / shard1); }, {shard1, "missing"}},
      {"overlap", [&](const fs::path& p) {
         edit_manifest(p, [](json& j) { j["state"]["zero"]["shards"][2]["begin"] = j["state"]["zero"]["shards"][2]["begin"].get<int64_t>() - 1; });
       }, {"state.json", "overlap", shard1}},
      {"gap", [&](const fs::path& p) {
         edit_manifest(p, [](json& j) { j["state"]["zero"]["shards"].erase(1); });
       }, {"state.json", "in no file", "zero-shard-00002-of-00004.safetensors"}},
      {"parameters overlap", [&](const fs::path& p) {  // their sizes still add up to the total
         edit_manifest(p, [](json& j) { j["state"]["zero"]["params"][1][1] = j["state"]["zero"]["params"][1][1].get<int64_t>() - 1; });
       }, {"state.json", "state.zero.params", "overlap"}},
      {"wrong total", [&](const fs::path& p) {
         edit_manifest(p, [](json& j) { j["state"]["zero"]["total"] = j["state"]["zero"]["total"].get<int64_t>() + 5; });
       }, {"state.json", "'total'"}},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const fs::path ckpt = dir / ("bad-" + std::to_string(&k - cases.data())) / "step-000000004";
    fs::create_directories(ckpt.parent_path());
    fs::copy(good, ckpt);
    k.damage(ckpt);
    const auto before = fingerprint(ckpt.parent_path());
    const fs::path run = dir / ("run-" + std::to_string(&k - cases.data()));
    const auto errors = resume_errors(ckpt, 2, tr, run);
    ASSERT_EQ(errors.size(), 2u);
    bool named = false;
    for (const std::string& e : errors) {
      EXPECT_FALSE(e.empty()) << "every rank must stop";
      bool all = !e.empty();
      for (const std::string& want : k.expect) all = all && e.find(want) != std::string::npos;
      named = named || all;
    }
    EXPECT_TRUE(named) << errors[0] << "\n" << errors[1];
    EXPECT_EQ(fingerprint(ckpt.parent_path()), before) << "the checkpoint was changed";
    EXPECT_FALSE(fs::exists(run / "checkpoints" / "step-000000006")) << "a failed resume saved something";
    EXPECT_FALSE(fs::exists(run / "metrics.jsonl"));
  }
  // Another model (here: under another name): the saved layout is refused, saying what to do.
  {
    run_ranks(1, [&](int, comm::ProcessGroup& pg) {
      auto model = nn::make_model("fmnist-cnn", 7);
      ddp::ModelParams params(*model);
      ddp::ZeroOptimizer zero(pg, params, {.lr = 0.05f, .momentum = 0.9f});
      try {
        restore_zero_optimizer(zero, params, load_checkpoint(good));
        ADD_FAILURE() << "another model's ZeRO state must be refused";
      } catch (const DataError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("the model's parameters changed since the checkpoint was saved"), std::string::npos) << msg;
        EXPECT_NE(msg.find("without --resume"), std::string::npos) << msg;
      }
    });
  }
}

TEST(ZeroConfig, CombinationsZeroCannotDoAreRefusedNamingTheOption) {
  TrainConfig c;
  c.zero = true;
  EXPECT_NO_THROW(validate(c));
  c.optimizer = "adamw";
  try {
    validate(c);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("zero = true (--zero)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("adamw"), std::string::npos) << e.what();
  }
  c.optimizer = "sgd";
  c.clip = 1.0;
  EXPECT_THROW(validate(c), ConfigError);
  EXPECT_TRUE(parse_config("zero = true\n", "inline").zero);
  EXPECT_THROW(parse_config("zero = true\noptimizer = \"adamw\"\n", "inline"), ConfigError);
}

}  // namespace
}  // namespace lockstep::train
