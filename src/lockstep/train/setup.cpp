#include "lockstep/train/setup.h"

#include <nlohmann/json.hpp>

#include "lockstep/comm/process_group.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/core/log.h"
#include "lockstep/data/idx.h"
#include "lockstep/data/text.h"
#include "lockstep/nn/models.h"
#include "lockstep/store/rendezvous.h"

namespace lockstep::train {

namespace {

constexpr int64_t kCharGptBlock = 64;  // nn::CharGptConfig{}.block

TrainData load_images(const TrainConfig& c) {
  std::string dir = c.data_dir;
  if (dir.empty()) {
    const auto found = data::find_fashion_mnist_dir();
    if (!found)
      LOCKSTEP_THROW(ConfigError, "no Fashion-MNIST data found (looked in ", data::kDebianFashionMnistDir,
                     "); install Debian's dataset-fashion-mnist or pass --data DIR with the "
                     "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] files");
    dir = *found;
  }
  TrainData d;
  d.train = data::load_mnist(dir, data::Split::train);
  d.test = data::load_mnist(dir, data::Split::test);
  return d;
}

TrainData load_chars(const TrainConfig& c) {
  if (c.data_dir.empty())
    LOCKSTEP_THROW(ConfigError, "model char-gpt needs a text file: pass --data FILE (or data_dir = \"FILE\")");
  data::TextDataset t = data::load_text(c.data_dir, kCharGptBlock);
  if (t.vocab.size() > 96)
    LOCKSTEP_THROW(DataError, c.data_dir, ": ", t.vocab.size(),
                   " distinct bytes, but char-gpt has a vocabulary of 96; use plain ASCII text");
  const int64_t n = t.data.size(), n_test = n / 10;
  if (n - n_test < 1) LOCKSTEP_THROW(DataError, c.data_dir, ": too short for even one window of 64 characters");
  TrainData d;
  d.train = first_samples(t.data, n - n_test);
  // The held-out tail: every window from n - n_test on.
  std::vector<uint8_t> f;
  std::vector<int32_t> y;
  for (int64_t i = n - n_test; i < n; ++i) {
    auto fs = t.data.u8_features(i);
    auto ts = t.data.targets(i);
    f.insert(f.end(), fs.begin(), fs.end());
    y.insert(y.end(), ts.begin(), ts.end());
  }
  if (n_test > 0)
    d.test = data::Dataset::from_u8(t.data.name() + "[test]", t.data.kind(), t.data.sample_shape(), std::move(f),
                                    std::move(y), t.data.targets_per_sample(), t.data.num_classes());
  return d;
}

}  // namespace

data::Dataset first_samples(const data::Dataset& d, int64_t n) {
  if (n <= 0 || n >= d.size()) return d;
  std::vector<int32_t> y;
  for (int64_t i = 0; i < n; ++i) {
    auto ts = d.targets(i);
    y.insert(y.end(), ts.begin(), ts.end());
  }
  if (d.kind() == data::FeatureKind::float32) {
    std::vector<float> f;
    for (int64_t i = 0; i < n; ++i) {
      auto fs = d.f32_features(i);
      f.insert(f.end(), fs.begin(), fs.end());
    }
    return data::Dataset::from_f32(d.name(), d.sample_shape(), std::move(f), std::move(y),
                                   d.targets_per_sample(), d.num_classes());
  }
  std::vector<uint8_t> f;
  for (int64_t i = 0; i < n; ++i) {
    auto fs = d.u8_features(i);
    f.insert(f.end(), fs.begin(), fs.end());
  }
  return data::Dataset::from_u8(d.name(), d.kind(), d.sample_shape(), std::move(f), std::move(y),
                                d.targets_per_sample(), d.num_classes());
}

TrainData load_train_data(const TrainConfig& c) {
  TrainData d;
  if (c.model == "char-gpt") d = load_chars(c);
  else if (c.model.rfind("fmnist-", 0) == 0) d = load_images(c);
  else LOCKSTEP_THROW(ConfigError, "model '", c.model, "' has no dataset `lockstep train` knows; "
                      "use fmnist-mlp, fmnist-cnn or char-gpt");
  d.train = first_samples(d.train, c.train_limit);
  d.test = first_samples(d.test, c.test_limit);
  return d;
}

namespace {

// What must be equal on every rank, as (name, value) in a fixed order.
std::vector<std::pair<std::string, std::string>> agreement_fields(const TrainConfig& c, int world,
                                                                  const TrainData& d) {
  return {{"world size", std::to_string(world)},
          {"backend", c.backend},
          {"model", c.model},
          {"seed", std::to_string(c.seed)},
          {"batch", std::to_string(c.batch)},
          {"grad_accum", std::to_string(c.grad_accum)},
          {"optimizer", c.optimizer},
          {"zero", c.zero ? "true" : "false"},
          {"lr", str_cat(c.lr)},
          {"epochs", std::to_string(c.epochs)},
          {"max_steps", std::to_string(c.max_steps)},
          {"resume", c.resume.empty() ? "(none)" : c.resume},
          {"training samples", std::to_string(d.train.size())},
          {"test samples", std::to_string(d.test.size())}};
}

}  // namespace

TrainData preflight(store::Store& store, int rank, int world, const TrainConfig& c, Millis timeout) {
  auto key = [](int r) { return str_cat("preflight/", r); };
  TrainData d;
  nlohmann::json mine;
  std::exception_ptr failed;
  try {
    d = load_train_data(c);
    for (const auto& [name, value] : agreement_fields(c, world, d)) mine["fields"].push_back({name, value});
  } catch (const std::exception& e) {
    mine = {{"error", e.what()}};
    failed = std::current_exception();
  }
  store.set(key(rank), store::to_bytes(mine.dump()));
  if (failed) std::rethrow_exception(failed);
  for (int r = 0; r < world; ++r) {
    if (r == rank) continue;
    nlohmann::json theirs;
    try {
      theirs = nlohmann::json::parse(store::to_string(store.get(key(r), timeout)));
    } catch (const TimeoutError&) {
      LOCKSTEP_THROW(TimeoutError, "pre-flight: rank ", rank, " waited ", timeout.count() / 1000,
                     " s for rank ", r, " to load its data and report; is rank ", r,
                     " running, and started with the same job (store address, token)?");
    }
    if (theirs.contains("error"))
      LOCKSTEP_THROW(ConfigError, "pre-flight: rank ", r, " cannot start: ",
                     theirs["error"].get<std::string>(), " (seen from rank ", rank,
                     "; fix that rank's data or config and start the job again)");
    const auto& a = mine["fields"];
    const auto& b = theirs["fields"];
    for (size_t i = 0; i < a.size() && i < b.size(); ++i)
      if (a[i] != b[i])
        LOCKSTEP_THROW(ConfigError, "pre-flight: ranks disagree on ", a[i][0].get<std::string>(),
                       ": rank ", rank, " has ", a[i][1].get<std::string>(), ", rank ", r, " has ",
                       b[i][1].get<std::string>(), "; start every rank with the same config, "
                       "flags and data");
  }
  return d;
}

TrainResult run_worker(const TrainConfig& c, TrainerHooks hooks) {
  validate(c);
  const DistEnv env = read_dist_env();
  set_log_rank(env.world_size > 1 ? env.rank : -1);
  auto model = nn::make_model(c.model, c.seed);
  const Millis timeout(int64_t(c.timeout * 1000));
  auto store = store::connect_store(env, timeout);
  const TrainData d = preflight(*store, env.rank, env.world_size, c, timeout);
  comm::Options opts;
  opts.timeout = timeout;  // a stalled peer becomes an error naming it after this long
  opts.algorithm = "ring";  // a fixed reduction order: bitwise-reproducible runs and resumes
  auto pg = comm::ProcessGroup::create(c.backend, *store, env.rank, env.world_size, opts);
  Trainer trainer(c, *model, d.train, d.test.size() > 0 ? &d.test : nullptr, *pg, std::move(hooks));
  return trainer.run();
}

}  // namespace lockstep::train
