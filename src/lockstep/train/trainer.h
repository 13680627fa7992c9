// Trainer: the data-parallel training loop of `lockstep train`, on every rank.
//
//   Trainer t(cfg, model, train_set, &test_set, *pg);
//   TrainResult r = t.run();          // rank 0 prints progress and the summary line
//
// Each optimizer step runs `grad_accum` micro-batches (gradients reduced once, on the last
// one, by DistributedDataParallel), clips, sets the scheduled learning rate (warm-up, linear
// scaling rule) and steps. Loss, sample and correct counts are summed over ranks every step,
// so every rank sees the same numbers and stops together on a NaN/Inf loss. Evaluation runs
// every `eval_every` steps and at each epoch end over an exact sampler (every test sample
// counted once across ranks). Rank 0 writes metrics and checkpoints; `resume` continues a
// run bitwise-exactly (same world size): the model, optimizer, sampler position and step are
// restored, and all other randomness derives from (seed, epoch, sample index). Which
// checkpoint, if any, and the lineage new checkpoints belong to are decided by rank 0
// (run_start.h, lineage.h) and shared with every rank.
//
// With `zero` (ZeRO stage 1, SGD only) DDP does not synchronise gradients; ddp::ZeroOptimizer
// reduce-scatters them, steps each rank's slice of the momentum and all-gathers the weights
// (a step whose averaged gradients are not finite is skipped on every rank, then training
// stops). There is no clipping (validate refuses clip > 0). Checkpoints keep one momentum
// shard per rank (zero_checkpoint.h), and `resume` works at any world size, with or without
// ZeRO; it is bitwise-exact at the same world size.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "lockstep/comm/process_group.h"
#include "lockstep/core/error.h"
#include "lockstep/data/dataset.h"
#include "lockstep/nn/model.h"
#include "lockstep/train/config.h"

namespace lockstep::train {

// Training stopped because the loss or the gradients became NaN or Inf.
class DivergedError : public Error {
 public:
  using Error::Error;
};

struct TrainResult {
  int64_t steps = 0;        // optimizer steps done in total (including before a resume)
  int64_t epochs = 0;       // epochs completed
  double epochs_done = 0;   // epochs completed plus the part of the one max_steps ended in
  double train_loss = NAN;  // mean over the last logged window
  double test_loss = NAN;
  double test_acc = NAN;    // in [0, 1]; NaN without a test set
  double samples_per_s = 0; // training throughput of this process's steps (global samples)
  double seconds = 0;
  bool stopped = false;     // a hook asked to stop before the end
  bool already_complete = false;  // resumed at or past the last step; nothing was trained
  int64_t total_steps = 0;  // the configuration's last step (set with already_complete)
  std::filesystem::path last_checkpoint;
  std::string summary_line(const TrainConfig& c, int world_size) const;
};

struct TrainerHooks {
  // Called after every optimizer step (after its checkpoint, if any); returning true stops
  // training there, as a crash right after that step would (for resume tests).
  std::function<bool(int64_t step)> stop_after;
  FILE* out = stdout;              // progress and summary (rank 0)
  std::optional<bool> tty;         // force the progress bar on/off (default: isatty)
};

class Trainer {
 public:
  // `model`, the datasets and `pg` must outlive the Trainer. `test` may be null.
  Trainer(TrainConfig cfg, nn::Model& model, const data::Dataset& train, const data::Dataset* test,
          comm::ProcessGroup& pg, TrainerHooks hooks = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainResult run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockstep::train
