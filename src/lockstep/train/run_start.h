// How a `lockstep train` run starts in its run directory, so that runs never mix: from
// scratch (refused where an earlier run is, unless `overwrite`), continuing the current
// lineage (`--resume auto`, a restart, `--resume RUN_DIR`), or forking a new lineage from an
// older checkpoint (`--resume .../step-N`: a rollback; lineage.h). Rank 0 decides; the
// Trainer hands the checkpoint to every rank, and once it is loaded rank 0 commits the
// decision (checkpoints/HEAD.json; with `overwrite`, the earlier run deleted), so that a run
// that fails to start changes nothing. Damaged checkpoints are passed over (newest intact first)
// where the choice is automatic, never where a checkpoint directory was named.
//
//   RunStart s = start_run(cfg, run_start_env());   // rank 0
//   if (s.resume) s.loaded ? *s.loaded : load_checkpoint(*s.resume) ...;
//   commit_run_start(s);                              // then save with .lineage = s.lineage
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "lockstep/train/checkpoint.h"
#include "lockstep/train/config.h"
#include "lockstep/train/lineage.h"

namespace lockstep::train {

struct RunStartEnv {
  int restart_count = 0;  // LOCKSTEP_RESTART_COUNT: > 0 in a restarted worker
  std::string job;  // LOCKSTEP_JOB_ID, else MASTER_ADDR:MASTER_PORT under a launcher ("" alone)
};
RunStartEnv run_start_env();

struct RunStart {
  std::optional<std::filesystem::path> resume;  // nullopt: from scratch
  // *resume's model and optimizer, where choosing it meant reading it (the newest intact
  // checkpoint): load this instead of reading the files again. nullopt: load *resume.
  std::optional<Checkpoint> loaded;
  Lineage lineage;                              // the lineage this run saves in
  std::string note;                             // which checkpoint and why
  std::vector<std::string> skipped;             // damaged checkpoints passed over, each with why
  Head head;                                    // what commit_run_start records
  std::filesystem::path ckpt_dir;
  std::string delete_earlier;  // overwrite: the earlier run to delete ("" none)
};

// Rank 0 only. A restart of the job that wrote HEAD.json continues its lineage whatever
// `resume` says (an explicit checkpoint was already taken by the first attempt). ConfigError
// for a new run in a directory holding one (naming --resume auto and --overwrite);
// DataError when nothing intact is left to resume.
RunStart start_run(const TrainConfig& c, const RunStartEnv& env);
// Rank 0, after the checkpoint loaded: deletes the earlier run (overwrite) and writes HEAD.json.
void commit_run_start(const RunStart& s);

// `lockstep checkpoints rollback`: makes the checkpoint of `step` (of the lineage whose id
// starts with `lineage`, when several have that step) the newest of the current lineage, so
// that `--resume auto` and restarts continue from it. The checkpoints that are then of no
// current lineage are kept as an abandoned branch, or deleted with `prune`. DataError for a
// damaged or missing checkpoint, ConfigError when the step is ambiguous.
struct Rollback {
  CheckpointEntry to;
  Lineage lineage;                         // the current lineage afterwards
  bool changed = false;                    // false: `to` was the newest of the current lineage
  std::vector<CheckpointEntry> abandoned;  // of no current lineage (deleted with prune)
};
Rollback rollback_run(const std::filesystem::path& ckpt_dir, int64_t step,
                      const std::string& lineage, bool prune);

}  // namespace lockstep::train
