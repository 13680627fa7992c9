// What a `lockstep train` worker builds from its TrainConfig before the Trainer runs: the
// model, the datasets, and (from the distributed environment) the store and process group.
//
//   int code = run_worker(cfg);    // one rank of `lockstep train`, returns the exit status
#pragma once

#include <cstdio>
#include <memory>

#include "lockstep/core/clock.h"
#include "lockstep/data/dataset.h"
#include "lockstep/nn/model.h"
#include "lockstep/store/store.h"
#include "lockstep/train/config.h"
#include "lockstep/train/trainer.h"

namespace lockstep::train {

struct TrainData {
  data::Dataset train;
  data::Dataset test;  // empty (size 0) when the data has no test split
};

// fmnist-mlp / fmnist-cnn: Fashion-MNIST (or MNIST) IDX files in data_dir, or Debian's
// dataset-fashion-mnist when data_dir is empty. char-gpt: a text file (data_dir), the last
// tenth held out for testing. ConfigError / DataError saying what to fix.
TrainData load_train_data(const TrainConfig& c);
// The first n samples of d (all when n <= 0 or n >= size).
data::Dataset first_samples(const data::Dataset& d, int64_t n);

// Pre-flight, before the process group exists: loads this rank's data, posts to the store
// what this rank is about to run (or why it cannot), and checks every other rank's post
// against its own. A rank that cannot read its data, or was started with another backend,
// model, batch, seed, learning rate, schedule length or resume point, stops every rank at
// step 0 with an error naming the rank and what differs, instead of a hang or a
// silently wrong run. Returns this rank's data. Waits for the others up to `timeout`.
TrainData preflight(store::Store& store, int rank, int world, const TrainConfig& c, Millis timeout);

// One worker: connects to the job's store (RANK, WORLD_SIZE, MASTER_ADDR, ... or a single
// process), builds everything, trains, and returns its result.
TrainResult run_worker(const TrainConfig& c, TrainerHooks hooks = {});

}  // namespace lockstep::train
