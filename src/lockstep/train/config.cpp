#include "lockstep/train/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <toml++/toml.h>

#include "lockstep/core/error.h"

namespace lockstep::train {

namespace {

using Setter = std::function<void(TrainConfig&, const toml::node&, const std::string& where)>;

struct Field {
  const char* name;
  Setter set;
  std::function<nlohmann::json(const TrainConfig&)> get;
  KeyKind kind;
  const char* doc = "";
};

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "a date/time";
  }
}

template <class T>
Field int_field(const char* name, T TrainConfig::*member, int64_t lo, int64_t hi) {
  return {name,
          [=](TrainConfig& c, const toml::node& n, const std::string& where) {
            const auto v = n.value_exact<int64_t>();
            if (!v) LOCKSTEP_THROW(ConfigError, where, ": key '", name, "' must be an integer, got ", type_name(n));
            if (*v < lo || *v > hi)
              LOCKSTEP_THROW(ConfigError, where, ": key '", name, "' = ", *v, " is out of range [", lo, ", ", hi, "]");
            c.*member = T(*v);
          },
          [=](const TrainConfig& c) { return nlohmann::json(c.*member); },
          KeyKind::integer};
}

Field float_field(const char* name, double TrainConfig::*member, double lo, double hi) {
  return {name,
          [=](TrainConfig& c, const toml::node& n, const std::string& where) {
            std::optional<double> v = n.is_integer() ? std::optional<double>(double(*n.value<int64_t>()))
                                                     : n.value_exact<double>();
            if (!v) LOCKSTEP_THROW(ConfigError, where, ": key '", name, "' must be a number, got ", type_name(n));
            if (!(*v >= lo && *v <= hi))
              LOCKSTEP_THROW(ConfigError, where, ": key '", name, "' = ", *v, " is out of range [", lo, ", ", hi, "]");
            c.*member = *v;
          },
          [=](const TrainConfig& c) { return nlohmann::json(c.*member); },
          KeyKind::number};
}

Field bool_field(const char* name, bool TrainConfig::*member) {
  return {name,
          [=](TrainConfig& c, const toml::node& n, const std::string& where) {
            const auto v = n.value_exact<bool>();
            if (!v) LOCKSTEP_THROW(ConfigError, where, ": key '", name, "' must be true or false, got ", type_name(n));
            c.*member = *v;
          },
          [=](const TrainConfig& c) { return nlohmann::json(c.*member); },
          KeyKind::boolean};
}

// choices empty: any string.
Field string_field(const char* name, std::string TrainConfig::*member,
                   std::vector<std::string> choices = {}) {
  return {name,
          [=](TrainConfig& c, const toml::node& n, const std::string& where) {
            const auto v = n.value_exact<std::string>();
            if (!v) LOCKSTEP_THROW(ConfigError, where, ": key '", name, "' must be a string, got ", type_name(n));
            if (!choices.empty() && std::find(choices.begin(), choices.end(), *v) == choices.end()) {
              std::string list;
              for (const auto& ch : choices) list += (list.empty() ? "" : ", ") + ch;
              LOCKSTEP_THROW(ConfigError, where, ": key '", name, "' = \"", *v, "\" is not one of: ", list);
            }
            c.*member = *v;
          },
          [=](const TrainConfig& c) { return nlohmann::json(c.*member); },
          KeyKind::string};
}

// The field with its help text (`lockstep train --help` shows it for the flag of the key).
Field doc(Field f, const char* text) {
  f.doc = text;
  return f;
}

constexpr int64_t kBig = int64_t(1) << 40;

const std::vector<Field>& fields() {
  using C = TrainConfig;
  static const std::vector<Field> f = {
      doc(string_field("model", &C::model), "model: fmnist-mlp, fmnist-cnn, char-gpt"),
      doc(string_field("data_dir", &C::data_dir),
          "dataset directory (IDX files) or text file (char-gpt); empty: the dataset's default location"),
      doc(int_field("epochs", &C::epochs, 1, 1000000), "epochs to train"),
      doc(int_field("max_steps", &C::max_steps, 0, kBig), "stop after this many optimizer steps (0: epochs decide)"),
      doc(int_field("batch", &C::batch, 1, 1 << 20), "batch size per worker and micro-batch"),
      doc(int_field("grad_accum", &C::grad_accum, 1, 1 << 16), "micro-batches per optimizer step"),
      doc(float_field("lr", &C::lr, 0.0, 1e3), "learning rate before the scaling rule (0: weights stay as they are)"),
      doc(string_field("optimizer", &C::optimizer, {"sgd", "adamw"}), "sgd or adamw"),
      doc(float_field("momentum", &C::momentum, 0.0, 1.0), "SGD momentum (sgd only)"),
      doc(float_field("weight_decay", &C::weight_decay, 0.0, 10.0), "weight decay (decoupled for adamw)"),
      doc(bool_field("nesterov", &C::nesterov), "Nesterov momentum (sgd)"),
      doc(bool_field("zero", &C::zero),
          "ZeRO stage 1: shard the SGD momentum over the workers (needs optimizer sgd, clip 0); checkpoints "
          "keep one shard per worker and resume at any number of workers"),
      doc(float_field("bucket_cap_mb", &C::bucket_cap_mb, 1.0 / 1024, 4096.0),
          "DDP gradient bucket cap, MiB: a bucket's all-reduce starts once it holds this much (the first "
          "bucket closes at min(this, 1 MiB)); smaller caps start earlier in backward but send more "
          "messages (`lockstep plan` gives the best cap for a link)"),
      doc(int_field("warmup_steps", &C::warmup_steps, 0, kBig), "steps of linear learning-rate warm-up"),
      doc(string_field("schedule", &C::schedule, {"constant", "cosine", "step"}),
          "learning-rate schedule: constant, cosine or step"),
      doc(int_field("step_size", &C::step_size, 1, kBig), "schedule step: decay every this many steps"),
      doc(float_field("gamma", &C::gamma, 0.0, 1.0), "schedule step: factor per decay"),
      doc(float_field("min_lr", &C::min_lr, 0.0, 1e3), "schedule cosine: the final learning rate"),
      doc(string_field("scaling_rule", &C::scaling_rule, {"none", "linear"}),
          "none, or linear: lr * global batch / base_batch"),
      doc(int_field("base_batch", &C::base_batch, 1, kBig), "the global batch lr was tuned for (scaling_rule linear)"),
      doc(float_field("clip", &C::clip, 0.0, 1e9), "largest global gradient norm (0: no clipping)"),
      doc(string_field("backend", &C::backend), "process group backend: native, mpi, gloo, nccl (as built)"),
      doc(int_field("nproc", &C::nproc, 1, 1024), "local workers to start (1: this process)"),
      doc(int_field("max_restarts", &C::max_restarts, 0, 1000),
          "with nproc > 1: restart all workers up to this many times, each time from the newest intact "
          "checkpoint of the lineage this job started"),
      doc(int_field("seed", &C::seed, 0, std::numeric_limits<int64_t>::max()), "seed of initialisation and data order"),
      doc(bool_field("shuffle", &C::shuffle),
          "a new seeded order of the training samples each epoch (false: dataset order, sharded by rank)"),
      doc(string_field("run_dir", &C::run_dir),
          "directory for metrics, checkpoints and the report; one job at a time (RUN_DIR/.lock: a second job "
          "fails at once naming the first's pid and host)"),
      doc(int_field("checkpoint_every", &C::checkpoint_every, 0, kBig), "steps between checkpoints (0: at the end)"),
      doc(bool_field("checkpoint_initial", &C::checkpoint_initial),
          "also save the initial weights, before the first step, as checkpoint step 0 (a fresh run)"),
      doc(int_field("checkpoint_keep", &C::checkpoint_keep, 0, 1000000),
          "newest checkpoints of the current lineage kept (0: all)"),
      doc(int_field("checkpoint_keep_every", &C::checkpoint_keep_every, 0, kBig),
          "also keep every checkpoint whose step is a multiple of this (0: off)"),
      doc(int_field("checkpoint_keep_best", &C::checkpoint_keep_best, 0, 1000000),
          "also keep the N best checkpoints by checkpoint_best_metric (those with an eval at their step)"),
      doc(string_field("checkpoint_best_metric", &C::checkpoint_best_metric, {"test_loss", "test_acc"}),
          "test_loss (lowest is best) or test_acc (highest)"),
      doc(bool_field("checkpoint_async", &C::checkpoint_async),
          "write checkpoints on a background thread from an in-memory snapshot"),
      doc(string_field("resume", &C::resume),
          "checkpoint, checkpoints dir or run dir to continue; 'auto': the newest intact checkpoint of the "
          "run dir's current lineage, if any. An older checkpoint of this run dir starts a new lineage from "
          "it (a rollback; the later ones are kept as an abandoned branch). A run already at its last step "
          "says so and exits 0"),
      doc(bool_field("overwrite", &C::overwrite),
          "a new run in a run dir that holds an earlier run deletes it (without it, or resume, such a run is "
          "refused)"),
      doc(int_field("eval_every", &C::eval_every, 0, kBig), "steps between evaluations (0: at the end of each epoch)"),
      doc(int_field("log_every", &C::log_every, 1, kBig), "steps between metrics records"),
      doc(int_field("threads", &C::threads, 0, 4096), "compute threads per worker (0: cores / nproc)"),
      doc(int_field("prefetch", &C::prefetch, 0, 64), "batches the data loader assembles ahead"),
      doc(bool_field("augment", &C::augment), "random crop and flip (image data sets)"),
      doc(int_field("train_limit", &C::train_limit, 0, kBig), "use only the first N training samples (0: all)"),
      doc(int_field("test_limit", &C::test_limit, 0, kBig), "use only the first N test samples (0: all)"),
      doc(float_field("timeout", &C::timeout, 0.1, 86400.0),
          "seconds to wait for the store, the other ranks' pre-flight and each collective"),
  };
  return f;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string suggestion(std::string_view key) {
  std::string best;
  size_t best_d = 3;
  for (const auto& f : fields()) {
    const size_t d = edit_distance(key, f.name);
    if (d < best_d) best_d = d, best = f.name;
  }
  return best.empty() ? " (see `lockstep train --help` for the accepted keys)"
                      : str_cat(" (did you mean '", best, "'?)");
}

}  // namespace

std::vector<std::string> config_keys() {
  std::vector<std::string> out;
  for (const auto& f : fields()) out.push_back(f.name);
  return out;
}

std::vector<KeyInfo> config_key_info() {
  std::vector<KeyInfo> out;
  for (const auto& f : fields()) out.push_back({f.name, f.kind, f.doc});
  return out;
}

void set_key(TrainConfig& c, const std::string& key, const std::string& text, const std::string& where) {
  const auto it = std::find_if(fields().begin(), fields().end(), [&](const Field& f) { return key == f.name; });
  if (it == fields().end()) LOCKSTEP_THROW(ConfigError, where, ": unknown key '", key, "'", suggestion(key));
  // The text as the TOML value it stands for; what it cannot be is left a string, so that the
  // key's own check names the type it wants ("must be an integer, got a string").
  std::optional<toml::table> t;
  if (it->kind != KeyKind::string) {
    std::string v = text;
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (v == "1" && it->kind == KeyKind::boolean) v = "true";
    if (v == "0" && it->kind == KeyKind::boolean) v = "false";
    try {
      t = toml::parse(str_cat("v = ", v));
    } catch (const toml::parse_error&) {
    }
  }
  if (!t) t = toml::table{{"v", text}};
  it->set(c, *t->get("v"), where);
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& f : fields()) j[f.name] = f.get(*this);
  return j;
}

namespace {

toml::table to_table(const TrainConfig& c) {
  toml::table t;
  const nlohmann::json j = c.to_json();  // outlives the loop (items() is a view)
  for (const auto& [key, v] : j.items()) {
    if (v.is_string()) t.insert(key, v.get<std::string>());
    else if (v.is_boolean()) t.insert(key, v.get<bool>());
    else if (v.is_number_integer()) t.insert(key, v.get<int64_t>());
    else t.insert(key, v.get<double>());
  }
  return t;
}

}  // namespace

namespace {

// A TOML basic string: quotes, backslashes and control characters escaped.
std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// The shortest text that reads back as the same double, always a TOML float ("0.1", "1.0").
std::string toml_float(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string out(buf, r.ptr);
  if (out.find_first_of(".ein") == std::string::npos) out += ".0";
  return out;
}

std::string toml_value(const nlohmann::json& v) {
  if (v.is_string()) return toml_string(v.get<std::string>());
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  return toml_float(v.get<double>());
}

}  // namespace

// Every key in the documented order, each under a comment with its help text: a complete,
// commented configuration file (`lockstep train --print-config`).
std::string config_to_toml(const TrainConfig& c) {
  std::string out;
  for (const auto& f : fields()) out += str_cat("# ", f.doc, "\n", f.name, " = ", toml_value(f.get(c)), "\n");
  return out;
}

// The same checks a config file's keys get in parse_config, on values set in code or by flags.
void check_values(const TrainConfig& c,
                  const std::function<std::string(const std::string& key)>& where) {
  const toml::table t = to_table(c);
  TrainConfig scratch;
  for (const auto& f : fields()) f.set(scratch, *t.get(f.name), where(f.name));
}

TrainConfig parse_config(std::string_view text, const std::string& origin) {
  toml::table table;
  try {
    table = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    LOCKSTEP_THROW(ConfigError, origin, ":", e.source().begin.line, ":", e.source().begin.column,
                   ": invalid TOML: ", e.description());
  }
  TrainConfig c;
  for (const auto& entry : table) {  // not a structured binding: clang 14 cannot capture those
    const auto& key = entry.first;
    const auto& node = entry.second;
    const std::string where = str_cat(origin, ":", node.source().begin.line);
    const auto it = std::find_if(fields().begin(), fields().end(),
                                 [&](const Field& f) { return key.str() == f.name; });
    if (it == fields().end())
      LOCKSTEP_THROW(ConfigError, where, ": unknown key '", key.str(), "'", suggestion(key.str()));
    it->set(c, node, where);
  }
  try {
    validate(c);
  } catch (const ConfigError& e) {
    LOCKSTEP_THROW(ConfigError, origin, ": ", e.what());
  }
  return c;
}

TrainConfig load_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) LOCKSTEP_THROW(ConfigError, path.string(), ": cannot open the config file (does it exist?)");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  if (text.size() > (size_t(1) << 20)) LOCKSTEP_THROW(ConfigError, path.string(), ": config file larger than 1 MiB");
  return parse_config(text, path.string());
}

void validate(const TrainConfig& c) {
  if (c.optimizer != "sgd" && c.optimizer != "adamw")
    LOCKSTEP_THROW(ConfigError, "optimizer '", c.optimizer, "' is not one of: sgd, adamw");
  if (c.schedule != "constant" && c.schedule != "cosine" && c.schedule != "step")
    LOCKSTEP_THROW(ConfigError, "schedule '", c.schedule, "' is not one of: constant, cosine, step");
  if (c.scaling_rule != "none" && c.scaling_rule != "linear")
    LOCKSTEP_THROW(ConfigError, "scaling_rule '", c.scaling_rule, "' is not one of: none, linear");
  if (c.seed > uint64_t(std::numeric_limits<int64_t>::max()))
    LOCKSTEP_THROW(ConfigError, "seed must be at most 2^63-1, got ", c.seed);
  if (c.model.empty()) LOCKSTEP_THROW(ConfigError, "model must not be empty");
  if (c.run_dir.empty()) LOCKSTEP_THROW(ConfigError, "run_dir must not be empty");
  if (!(c.lr >= 0)) LOCKSTEP_THROW(ConfigError, "lr must be >= 0, got ", c.lr);
  if (c.epochs < 1 || c.batch < 1 || c.grad_accum < 1 || c.nproc < 1)
    LOCKSTEP_THROW(ConfigError, "epochs, batch, grad_accum and nproc must be >= 1");
  if (!(c.timeout >= 0.1 && c.timeout <= 86400))
    LOCKSTEP_THROW(ConfigError, "timeout must be in [0.1, 86400] seconds, got ", c.timeout);
  if (c.checkpoint_best_metric != "test_loss" && c.checkpoint_best_metric != "test_acc")
    LOCKSTEP_THROW(ConfigError, "checkpoint_best_metric '", c.checkpoint_best_metric,
                   "' is not one of: test_loss, test_acc");
  if (c.checkpoint_keep_every < 0 || c.checkpoint_keep_best < 0 || c.checkpoint_keep < 0)
    LOCKSTEP_THROW(ConfigError, "checkpoint_keep, checkpoint_keep_every and checkpoint_keep_best must be >= 0");
  if (c.overwrite && c.resume == "auto")
    LOCKSTEP_THROW(ConfigError, "overwrite (--overwrite) starts a new run and deletes the one in run_dir; it "
                   "cannot be combined with resume = \"auto\" (drop one of them)");
  if (c.min_lr > c.lr) LOCKSTEP_THROW(ConfigError, "min_lr (", c.min_lr, ") must not exceed lr (", c.lr, ")");
  if (c.optimizer == "adamw" && c.nesterov)
    LOCKSTEP_THROW(ConfigError, "nesterov applies to optimizer = \"sgd\" only");
  // ZeroOptimizer shards SGD's momentum and reduces the gradients inside its own step.
  if (c.zero && c.optimizer != "sgd")
    LOCKSTEP_THROW(ConfigError, "zero = true (--zero) shards the state of optimizer = \"sgd\" only, not \"",
                   c.optimizer, "\"; use optimizer = \"sgd\" or drop zero");
  if (c.zero && c.clip > 0)
    LOCKSTEP_THROW(ConfigError, "zero = true (--zero) cannot clip gradients (clip = ", c.clip,
                   "): ZeroOptimizer averages them inside its step, after clipping would run; set clip = 0 "
                   "or drop zero");
}

}  // namespace lockstep::train
