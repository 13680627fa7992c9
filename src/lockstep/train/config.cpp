#include "lockstep/train/config.h"

#include <algorithm>
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
          [=](const TrainConfig& c) { return nlohmann::json(c.*member); }};
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
          [=](const TrainConfig& c) { return nlohmann::json(c.*member); }};
}

Field bool_field(const char* name, bool TrainConfig::*member) {
  return {name,
          [=](TrainConfig& c, const toml::node& n, const std::string& where) {
            const auto v = n.value_exact<bool>();
            if (!v) LOCKSTEP_THROW(ConfigError, where, ": key '", name, "' must be true or false, got ", type_name(n));
            c.*member = *v;
          },
          [=](const TrainConfig& c) { return nlohmann::json(c.*member); }};
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
          [=](const TrainConfig& c) { return nlohmann::json(c.*member); }};
}

constexpr int64_t kBig = int64_t(1) << 40;

const std::vector<Field>& fields() {
  using C = TrainConfig;
  static const std::vector<Field> f = {
      string_field("model", &C::model),
      string_field("data_dir", &C::data_dir),
      int_field("epochs", &C::epochs, 1, 1000000),
      int_field("max_steps", &C::max_steps, 0, kBig),
      int_field("batch", &C::batch, 1, 1 << 20),
      int_field("grad_accum", &C::grad_accum, 1, 1 << 16),
      float_field("lr", &C::lr, 0.0, 1e3),
      string_field("optimizer", &C::optimizer, {"sgd", "adamw"}),
      float_field("momentum", &C::momentum, 0.0, 1.0),
      float_field("weight_decay", &C::weight_decay, 0.0, 10.0),
      bool_field("nesterov", &C::nesterov),
      bool_field("zero", &C::zero),
      int_field("warmup_steps", &C::warmup_steps, 0, kBig),
      string_field("schedule", &C::schedule, {"constant", "cosine", "step"}),
      int_field("step_size", &C::step_size, 1, kBig),
      float_field("gamma", &C::gamma, 0.0, 1.0),
      float_field("min_lr", &C::min_lr, 0.0, 1e3),
      string_field("scaling_rule", &C::scaling_rule, {"none", "linear"}),
      int_field("base_batch", &C::base_batch, 1, kBig),
      float_field("clip", &C::clip, 0.0, 1e9),
      string_field("backend", &C::backend),
      int_field("nproc", &C::nproc, 1, 1024),
      int_field("seed", &C::seed, 0, std::numeric_limits<int64_t>::max()),
      string_field("run_dir", &C::run_dir),
      int_field("checkpoint_every", &C::checkpoint_every, 0, kBig),
      int_field("checkpoint_keep", &C::checkpoint_keep, 0, 1000000),
      int_field("checkpoint_keep_every", &C::checkpoint_keep_every, 0, kBig),
      int_field("checkpoint_keep_best", &C::checkpoint_keep_best, 0, 1000000),
      string_field("checkpoint_best_metric", &C::checkpoint_best_metric, {"test_loss", "test_acc"}),
      bool_field("checkpoint_async", &C::checkpoint_async),
      string_field("resume", &C::resume),
      bool_field("overwrite", &C::overwrite),
      int_field("eval_every", &C::eval_every, 0, kBig),
      int_field("log_every", &C::log_every, 1, kBig),
      int_field("threads", &C::threads, 0, 4096),
      int_field("prefetch", &C::prefetch, 0, 64),
      bool_field("augment", &C::augment),
      int_field("train_limit", &C::train_limit, 0, kBig),
      int_field("test_limit", &C::test_limit, 0, kBig),
      float_field("timeout", &C::timeout, 0.1, 86400.0),
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

std::string config_to_toml(const TrainConfig& c) {
  std::ostringstream out;
  out << to_table(c) << "\n";
  return out.str();
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
  if (!(c.lr > 0)) LOCKSTEP_THROW(ConfigError, "lr must be > 0, got ", c.lr);
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
