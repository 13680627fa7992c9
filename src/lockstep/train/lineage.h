// Lineages: which checkpoints of a run directory belong to the run going on, so that a
// rollback, a fresh run or a restart never mixes with another run's checkpoints.
//
// Every checkpoint's state.json records the lineage it was saved in: an id and the chain of
// ancestor lineages it grew from, each with the last step it inherits. After
// `--resume checkpoints/step-150` in a directory that also holds 200 and 250 (lineage A), the
// new checkpoints are saved in lineage B = {id B, chain [A until 150]}: A's 150 and older
// are part of B's history, A's 200 and 250 are an abandoned branch. RUN_DIR/checkpoints/
// HEAD.json names the current lineage (rank 0 writes it when a run starts, `lockstep
// checkpoints rollback` when it moves back). Rotation deletes only members of the current
// lineage; `--resume auto` and restarts take its newest intact member. A checkpoint of
// another lineage whose step a new one needs is moved to checkpoints/branches/<id>/.
//
//   auto all = scan_checkpoints(ckpt_dir);
//   const Lineage cur = current_lineage(ckpt_dir, all);
//   for (const CheckpointEntry& e : members_of(all, cur)) ...
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::train {

struct Checkpoint;  // checkpoint.h

struct LineageLink {
  std::string id;
  int64_t until = 0;  // the last step of `id` that the descendant inherits
};

struct Lineage {
  std::string id;                  // "": saved before lineages were recorded
  std::vector<LineageLink> chain;  // ancestors, oldest first

  // Whether the checkpoint of `step` saved in lineage `of` is part of this lineage's history.
  bool contains(const std::string& of, int64_t step) const;
  // A new lineage that grows from step `step` of this one.
  Lineage fork(int64_t step) const;
  nlohmann::json to_json() const;
  // DataError prefixed by `origin` when malformed (hostile input).
  static Lineage from_json(const nlohmann::json& j, const std::string& origin);
};

// A fresh random lineage id (12 hex digits).
std::string new_lineage_id();
// The first 8 characters of an id, or "(none)" for checkpoints older than lineages.
std::string short_id(const std::string& id);

// checkpoints/HEAD.json: the current lineage, the checkpoint the latest run started from
// ("" from scratch) and the job that started it (restarts of that job continue it).
struct Head {
  Lineage lineage;
  std::string origin;
  std::string job;
};
std::optional<Head> read_head(const std::filesystem::path& ckpt_dir);  // DataError when corrupt
void write_head(const std::filesystem::path& ckpt_dir, const Head& head);

// One checkpoint directory as its state.json describes it (tensor files not read).
struct CheckpointEntry {
  std::filesystem::path path;
  int64_t step = -1;
  int64_t epoch = 0;
  Lineage lineage;
  nlohmann::json eval;  // {"step", "test_loss", "test_acc"} of an eval at its step, or null
  std::string error;    // why state.json cannot be read ("" when it can)
};

CheckpointEntry read_checkpoint_entry(const std::filesystem::path& dir);
// Every step-N directory of `ckpt_dir` and of its branches/<id>/, by step (ties: top level
// first).
std::vector<CheckpointEntry> scan_checkpoints(const std::filesystem::path& ckpt_dir);
// HEAD.json's lineage; without one, that of the newest readable checkpoint (a run directory
// of an older build: all in lineage "").
Lineage current_lineage(const std::filesystem::path& ckpt_dir,
                        const std::vector<CheckpointEntry>& all);
// The readable entries that belong to `lineage`, by step.
std::vector<CheckpointEntry> members_of(const std::vector<CheckpointEntry>& all,
                                        const Lineage& lineage);

// Reads every file state.json records, checking its size and CRC-32, and decodes the tensor
// files; "" when intact, else what is wrong (naming the file). When intact and `keep` is
// given, the model and optimizer as read go there (load_checkpoint's result), so that a
// caller about to load the checkpoint need not read it again.
std::string verify_checkpoint(const std::filesystem::path& dir, Checkpoint* keep = nullptr);

// The newest intact checkpoint of `members` (newest first); the ones skipped on the way, each
// with why, go to `skipped`; its contents as verify_checkpoint read them to `loaded`.
std::optional<CheckpointEntry> newest_intact(const std::vector<CheckpointEntry>& members,
                                             std::vector<std::string>* skipped,
                                             Checkpoint* loaded = nullptr);

// Retention beyond "newest N": the newest keep_last, every step that is a multiple of
// keep_every, and the keep_best best by best_metric ("test_loss": lowest, "test_acc":
// highest; only checkpoints with an eval at their step compete).
struct Retention {
  int keep_last = 3;  // <= 0 keeps all
  int64_t keep_every = 0;
  int keep_best = 0;
  std::string best_metric = "test_loss";
};
// The members (by step) that the policy does not keep.
std::vector<CheckpointEntry> not_retained(const std::vector<CheckpointEntry>& members,
                                          const Retention& r);

}  // namespace lockstep::train
