// A step profile: what the cost model needs to know about one model's training step —
// forward, backward and optimizer time, and each gradient bucket's size and the moment it
// became ready in backward. `lockstep train --profile FILE` records one from the per-rank
// Chrome traces of a short run (ddp/timeline.h); built-in profiles describe GPT-like models
// from a FLOP estimate.
//
//   Profile p = load_profile("fmnist-cnn.profile.json");
//   std::vector<Bucket> b = rebucket(p, 4 << 20);   // what a 4 MiB bucket cap would give
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lockstep/plan/cost_model.h"

namespace lockstep::plan {

struct StepSample {
  double forward = 0, backward = 0, finalize = 0, optimizer = 0, step = 0;  // seconds
  std::vector<double> ready;  // per bucket, seconds after backward start
  std::vector<std::pair<size_t, double>>
      grads;  // (parameter, ready s) in the order they became final
};

struct Profile {
  std::string model;
  std::string source;     // "measured" (lockstep train --profile) or "builtin"
  int world_size = 1;     // workers of the profiled run (they shared one host's cores)
  std::string transport;  // of the profiled run ("shm", "tcp"), informative
  int64_t batch = 0;      // per worker
  int64_t params = 0;
  double bucket_cap_bytes = 0, first_bucket_bytes = 0;
  // Medians over the recorded steps, seconds. `other`: the rest of a step (data, the
  // trainer's loss all-reduce, metrics) = step - forward - backward - finalize - optimizer.
  double forward = 0, backward = 0, finalize = 0, optimizer = 0, step = 0, other = 0;
  std::vector<Bucket> buckets;    // in launch order, ready = median over steps
  std::vector<Bucket> grads;      // per parameter, in ready order (empty: only bucket times known)
  std::vector<StepSample> steps;  // per step, the slowest rank's sample: what the medians are of

  double compute() const { return forward + backward + optimizer + other; }
  double grad_bytes() const;
  nlohmann::json to_json() const;
};

// DataError naming `origin` and the missing or bad key.
Profile profile_from_json(const nlohmann::json& j, const std::string& origin);
Profile load_profile(const std::filesystem::path& path);
void save_profile(const Profile& p, const std::filesystem::path& path);

// From the Chrome traces of one run's ranks (Timeline files): steps are split at each
// "forward"; the first `skip` steps (warm-up, the bucket rebuild after step 0) and the last
// (no following forward) are left out. Each step is the sample of the rank that computed
// longest in it (every rank waits for that one's buckets); `steps` holds those samples, for
// the steps every rank recorded. `meta` carries model, world_size, transport, batch,
// params and the bucket options; its measured fields are filled here. DataError when a
// trace is unreadable or has too few steps with buckets, or when `traces` is empty.
Profile profile_from_traces(const std::vector<std::filesystem::path>& traces, Profile meta,
                            int skip = 3);

// Built-in GPT-like models: "gpt-25m", "gpt-350m", "gpt-1.3b". `compute_s` (forward +
// backward per step; <= 0: the default, from 6 * params * tokens FLOPs at `flops` per
// second) split 1/3 forward, 2/3 backward, gradients produced evenly through backward.
// InvalidArgument for another name.
Profile builtin_profile(const std::string& name, double compute_s, double flops,
                        double grad_bytes_per_param, double bucket_cap_bytes);
std::vector<std::string> builtin_models();

// The profile's gradients cut into buckets of `cap` bytes (the first one min(cap, first
// bucket bytes)). With the profile's own cap the recorded buckets. With per-parameter ready
// times, buckets as DDP's plan_buckets makes them in that order, each ready with its last
// parameter. Otherwise each bucket's ready time is read off the profile's cumulative
// bytes-ready curve, taken as linear between its recorded buckets (and from backward start
// to the first).
std::vector<Bucket> rebucket(const Profile& p, double cap);

}  // namespace lockstep::plan
