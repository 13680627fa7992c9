// TrainConfig from TOML: defaults, values, and errors that name the file, line and key.
#include "lockstep/train/config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "lockstep/core/error.h"
#include "test_util.h"

namespace lockstep::train {
namespace {

std::string error_of(const std::string& text) {
  try {
    parse_config(text, "train.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(Config, DefaultsAndValues) {
  const TrainConfig d = parse_config("", "empty.toml");
  EXPECT_EQ(d.model, "fmnist-cnn");
  EXPECT_EQ(d.optimizer, "sgd");
  const TrainConfig c = parse_config(R"(
# a comment
model = "fmnist-mlp"
epochs = 3
batch = 32
lr = 1          # integers are accepted for floats
optimizer = "adamw"
weight_decay = 0.01
schedule = "cosine"
warmup_steps = 100
scaling_rule = "linear"
clip = 1.5
seed = 7
run_dir = "runs/x"
checkpoint_every = 50
checkpoint_keep = 2
augment = true
)", "t.toml");
  EXPECT_EQ(c.model, "fmnist-mlp");
  EXPECT_EQ(c.epochs, 3);
  EXPECT_EQ(c.batch, 32);
  EXPECT_DOUBLE_EQ(c.lr, 1.0);
  EXPECT_EQ(c.optimizer, "adamw");
  EXPECT_EQ(c.schedule, "cosine");
  EXPECT_EQ(c.warmup_steps, 100);
  EXPECT_DOUBLE_EQ(c.clip, 1.5);
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.checkpoint_keep, 2);
  EXPECT_TRUE(c.augment);
  const auto j = c.to_json();
  EXPECT_EQ(j["model"], "fmnist-mlp");
  EXPECT_EQ(j["checkpoint_every"], 50);
  EXPECT_EQ(j.size(), config_keys().size());
}

TEST(Config, UnknownKeyNamesLineAndSuggests) {
  const std::string msg = error_of("epochs = 2\n\nlearning_rat = 0.1\n");
  EXPECT_NE(msg.find("train.toml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key 'learning_rat'"), std::string::npos) << msg;
  const std::string msg2 = error_of("\nbatchh = 3\n");
  EXPECT_NE(msg2.find("did you mean 'batch'"), std::string::npos) << msg2;
  EXPECT_NE(error_of("[optim]\nlr = 1\n").find("unknown key 'optim'"), std::string::npos);
}

TEST(Config, WrongTypesAndRangesNameKeyAndLine) {
  std::string msg = error_of("model = \"m\"\nlr = \"fast\"\n");
  EXPECT_NE(msg.find("train.toml:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'lr' must be a number, got a string"), std::string::npos) << msg;
  msg = error_of("epochs = 0\n");
  EXPECT_NE(msg.find("train.toml:1: key 'epochs' = 0 is out of range"), std::string::npos) << msg;
  msg = error_of("\n\nbatch = 1.5\n");
  EXPECT_NE(msg.find("train.toml:3: key 'batch' must be an integer, got a float"), std::string::npos) << msg;
  msg = error_of("optimizer = \"lamb\"\n");
  EXPECT_NE(msg.find("not one of: sgd, adamw"), std::string::npos) << msg;
  msg = error_of("augment = 1\n");
  EXPECT_NE(msg.find("'augment' must be true or false"), std::string::npos) << msg;
  msg = error_of("seed = -1\n");
  EXPECT_NE(msg.find("'seed' = -1 is out of range"), std::string::npos) << msg;
}

TEST(Config, SyntaxErrorsNameLineAndColumn) {
  const std::string msg = error_of("epochs = 2\nlr = = 3\n");
  EXPECT_NE(msg.find("train.toml:2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("invalid TOML"), std::string::npos) << msg;
  EXPECT_NE(error_of("lr = 0.1\nlr = 0.2\n").find("train.toml:2"), std::string::npos);
}

TEST(Config, CrossFieldChecks) {
  EXPECT_NE(error_of("lr = 0.1\nmin_lr = 0.5\n").find("min_lr"), std::string::npos);
  EXPECT_NE(error_of("lr = -1\n").find("'lr' = -1 is out of range [0, 1000]"), std::string::npos);
  EXPECT_EQ(error_of("lr = 0\nmin_lr = 0\n"), "(accepted)");  // issue 22: a run that keeps the weights
  TrainConfig c;
  c.optimizer = "bogus";  // as a flag would set it
  EXPECT_THROW(validate(c), ConfigError);
}

TEST(Config, LoadsFilesAndNamesMissingOnes) {
  const auto dir = testing::fresh_dir("config");
  std::ofstream(dir / "c.toml") << "epochs = 5\n";
  EXPECT_EQ(load_config(dir / "c.toml").epochs, 5);
  try {
    load_config(dir / "missing.toml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.toml"), std::string::npos);
  }
}

}  // namespace
}  // namespace lockstep::train

namespace lockstep::train {
namespace {

TEST(Config, TomlRoundTrip) {
  TrainConfig c;
  c.model = "fmnist-mlp";
  c.lr = 0.125;
  c.seed = 99;
  c.augment = true;
  c.resume = "runs/a b/\"quoted\"";
  c.gamma = 0.1;
  c.shuffle = false;
  const TrainConfig back = parse_config(config_to_toml(c), "roundtrip");
  EXPECT_EQ(back.to_json(), c.to_json()) << config_to_toml(c);
}

// Issue 22: --print-config is a complete, commented file: every key once, under its help
// text, and floats as written (0.1, not 0.10000000000000001).
TEST(Config, TomlTextHasEveryKeyUnderItsHelp) {
  const std::string text = config_to_toml(TrainConfig{});
  for (const KeyInfo& k : config_key_info()) {
    EXPECT_FALSE(k.doc.empty()) << k.name;
    EXPECT_NE(text.find(str_cat("# ", k.doc, "\n", k.name, " = ")), std::string::npos) << k.name << "\n" << text;
  }
  EXPECT_NE(text.find("\ngamma = 0.1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nclip = 0.0\n"), std::string::npos) << text;
}

// Issue 22: every key can be set from a flag's text, with the checks of a file's key.
TEST(Config, EveryKeyIsSetFromTextWithTheChecksOfAFile) {
  const TrainConfig d;
  for (const KeyInfo& k : config_key_info()) {
    TrainConfig c;
    const nlohmann::json v = d.to_json()[k.name];
    const std::string text = v.is_string() ? v.get<std::string>() : v.is_boolean() ? (v.get<bool>() ? "false" : "true")
                                                                                    : v.dump();
    set_key(c, k.name, text, "flag");
    if (v.is_boolean()) EXPECT_NE(c.to_json()[k.name], v) << k.name;
    else EXPECT_EQ(c.to_json()[k.name], v) << k.name;
  }
  TrainConfig c;
  set_key(c, "grad_accum", "4", "flag --grad-accum");
  set_key(c, "shuffle", "false", "flag --shuffle");
  set_key(c, "lr", "0", "flag --lr");
  EXPECT_EQ(c.grad_accum, 4);
  EXPECT_FALSE(c.shuffle);
  EXPECT_EQ(c.lr, 0.0);
  auto error = [](const std::string& key, const std::string& text) {
    TrainConfig x;
    try {
      set_key(x, key, text, str_cat("flag --", key));
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(error("lr", "inf"), "flag --lr: key 'lr' = inf is out of range [0, 1000]");
  EXPECT_EQ(error("grad_accum", "two"), "flag --grad_accum: key 'grad_accum' must be an integer, got a string");
  EXPECT_EQ(error("shuffle", "maybe"), "flag --shuffle: key 'shuffle' must be true or false, got a string");
  EXPECT_NE(error("grad_acum", "2").find("did you mean 'grad_accum'"), std::string::npos);
}

}  // namespace
}  // namespace lockstep::train
