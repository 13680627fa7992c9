// TrainConfig: everything `lockstep train` needs, loaded from a TOML file of flat keys
// (`lr = 0.05`, `optimizer = "sgd"`, ...) and then overridden by command-line flags.
// An unknown key, a value of the wrong type or out of range is a ConfigError that names
// the file, the line and the key, and says what is accepted.
//
//   TrainConfig c = load_config("train.toml");   // or parse_config(text, "inline")
//   c.lr = 0.1;                                   // a flag
//   validate(c);                                  // cross-field checks
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::train {

struct TrainConfig {
  std::string model = "fmnist-cnn";
  std::string data_dir;               // empty: the dataset's default location
  int64_t epochs = 2;
  int64_t max_steps = 0;              // stop after this many optimizer steps (0: epochs decide)
  int64_t batch = 64;                 // per worker, per micro-batch
  int64_t grad_accum = 1;             // micro-batches per optimizer step
  double lr = 0.05;
  std::string optimizer = "sgd";      // sgd | adamw
  double momentum = 0.9;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool zero = false;                  // ZeRO stage 1: SGD momentum sharded over the workers
  double bucket_cap_mb = 25;          // DDP gradient bucket cap, MiB (the first: at most 1 MiB)
  int64_t warmup_steps = 0;
  std::string schedule = "constant";  // constant | cosine | step
  int64_t step_size = 1000;           // schedule = "step": decay every step_size steps
  double gamma = 0.1;                 // schedule = "step": factor per decay
  double min_lr = 0.0;                // schedule = "cosine": final lr
  std::string scaling_rule = "none";  // none | linear (lr * global_batch / base_batch)
  int64_t base_batch = 64;            // the global batch `lr` was tuned for
  double clip = 0.0;                  // max global gradient norm; 0: no clipping
  std::string backend = "native";
  int nproc = 1;                      // local workers `lockstep train` starts itself
  int max_restarts = 0;               // nproc > 1: restarts of all workers after a failure
  uint64_t seed = 42;
  bool shuffle = true;                // a new seeded sample order each epoch; false: dataset order
  std::string run_dir = "runs/latest";
  int64_t checkpoint_every = 0;       // steps; 0: only at the end of training
  bool checkpoint_initial = false;    // also save step 0 (the initial weights) of a fresh run
  int checkpoint_keep = 3;             // newest checkpoints kept (of the current lineage; 0: all)
  int64_t checkpoint_keep_every = 0;  // also keep every step that is a multiple of this (0: off)
  int checkpoint_keep_best = 0;       // also keep the N best by checkpoint_best_metric (0: off)
  std::string checkpoint_best_metric = "test_loss";  // test_loss (lowest) | test_acc (highest)
  bool checkpoint_async = true;       // snapshot in memory, write on a background thread
  std::string resume;                 // checkpoint, checkpoint dir or run dir; "" = fresh
  bool overwrite = false;             // a fresh run may delete an earlier run in run_dir
  int64_t eval_every = 0;             // steps; 0: only at the end of each epoch
  int64_t log_every = 10;             // steps between metrics records
  int threads = 0;                    // compute threads per worker; 0: cores / nproc
  int prefetch = 2;                   // batches the loader assembles ahead
  bool augment = false;               // random crop + flip (image datasets)
  int64_t train_limit = 0;            // use only the first N training samples (0: all)
  int64_t test_limit = 0;             // use only the first N test samples (0: all)
  double timeout = 300;               // seconds: store, pre-flight and every collective wait

  nlohmann::json to_json() const;
};

// Parses TOML text; `origin` (a path) prefixes errors as "origin:line: ...".
TrainConfig parse_config(std::string_view toml_text, const std::string& origin);
// Reads and parses a file; ConfigError when it cannot be read.
TrainConfig load_config(const std::filesystem::path& path);
// Cross-field and range checks (also after flags changed values).
void validate(const TrainConfig& c);
// Checks every key's value against the range (or choices) a config file's key must meet, for
// values that did not come from a file (flags). ConfigError "<where(key)>: key 'k' = v is out
// of range [lo, hi]".
void check_values(const TrainConfig& c,
                  const std::function<std::string(const std::string& key)>& where);
// The configuration as a TOML document that parse_config() reads back to an equal config.
std::string config_to_toml(const TrainConfig& c);
// The names of every accepted key (for help texts and suggestions).
std::vector<std::string> config_keys();

// Every key with the type of its value and a line of help, in the order of the docs; the
// `lockstep train` flag of key `a_b` is `--a-b`.
enum class KeyKind : uint8_t { integer, number, boolean, string };
struct KeyInfo {
  std::string name;
  KeyKind kind;
  std::string doc;
};
std::vector<KeyInfo> config_key_info();
// Sets `key` from the text of a flag's value ("0.1", "true", "sgd") with the checks of a
// config file's key; errors begin with `where` ("flag --lr: key 'lr' = inf is out of range").
void set_key(TrainConfig& c, const std::string& key, const std::string& text, const std::string& where);

}  // namespace lockstep::train
