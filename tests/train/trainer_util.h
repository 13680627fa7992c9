// The Trainer on thread ranks for the train tests: `world` ranks in this process, each with
// its own model and process group over one in-memory store, and a small fmnist-mlp config.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/nn/models.h"
#include "lockstep/store/hash_store.h"
#include "lockstep/train/trainer.h"

namespace lockstep::train {

struct RunOut {
  std::vector<float> weights;  // rank 0's final parameters
  TrainResult result;
  std::string output;  // rank 0's progress and summary
};

// Runs `world` ranks as threads of this process, each with its own model and process group.
inline RunOut train(int world, const TrainConfig& cfg, const data::Dataset& tr,
                    const data::Dataset* te, int64_t stop_after = -1,
                    std::function<bool(int64_t)> rank0_after_step = {}) {
  store::HashStore store;
  RunOut out;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  char* buf = nullptr;
  size_t len = 0;
  FILE* rank0_out = open_memstream(&buf, &len);
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto pg = comm::ProcessGroup::create("native", store, r, world, {.algorithm = "ring"});
        auto model = nn::make_model("fmnist-mlp", cfg.seed);
        TrainerHooks hooks;
        if (stop_after > 0) hooks.stop_after = [=](int64_t s) { return s == stop_after; };
        if (r == 0 && rank0_after_step) hooks.stop_after = rank0_after_step;
        hooks.out = r == 0 ? rank0_out : nullptr;
        hooks.tty = false;
        Trainer t(cfg, *model, tr, te, *pg, hooks);
        TrainResult res = t.run();
        if (r == 0) {
          out.result = res;
          auto p = model->flat_params();
          out.weights.assign(p.begin(), p.end());
        }
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::fclose(rank0_out);
  out.output.assign(buf, len);
  std::free(buf);
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

inline TrainConfig small_config(const std::filesystem::path& run_dir) {
  TrainConfig c;
  c.model = "fmnist-mlp";
  c.run_dir = run_dir.string();
  c.epochs = 2;
  c.batch = 8;
  c.lr = 0.05;
  c.momentum = 0.9;
  c.warmup_steps = 2;
  c.schedule = "cosine";
  c.clip = 5.0;
  c.checkpoint_every = 2;
  c.checkpoint_keep = 2;
  c.log_every = 1;
  c.seed = 7;
  c.prefetch = 1;
  return c;
}

}  // namespace lockstep::train
