#include "profile_run.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/plan/profile.h"
#include "lockstep/train/train_state.h"

namespace lockstep::apps {
namespace {

constexpr int64_t kProfileSteps = 20;  // 3 warm-up steps are left out, and the last

std::string trace_path(const std::string& file, const std::string& rank) {
  return file + ".rank" + rank + ".trace.json";
}

}  // namespace

void prepare_profile(train::TrainConfig& c, const std::string& file, int world) {
  if (world < 2)
    LOCKSTEP_THROW(ConfigError, "--profile ", file,
                   ": a profile needs 2 or more workers (--nproc 2): with one "
                   "worker DDP reduces nothing, so no bucket is timed");
  if (c.grad_accum != 1 || c.zero)
    LOCKSTEP_THROW(ConfigError, "--profile ", file,
                   ": profile a plain step (grad_accum = 1, no --zero); "
                   "this run has grad_accum = ",
                   c.grad_accum, c.zero ? " and zero = true" : "");
  if (c.max_steps == 0) c.max_steps = kProfileSteps;
  const std::string pattern = trace_path(file, "{rank}");
  if (const char* old = std::getenv("LOCKSTEP_TIMELINE"); old && *old)
    std::fprintf(stderr,
                 "lockstep train: --profile writes the timelines to %s, not LOCKSTEP_TIMELINE=%s\n",
                 pattern.c_str(), old);
  ::setenv("LOCKSTEP_TIMELINE", pattern.c_str(), 1);
}

void finish_profile(const train::TrainConfig& c, const std::string& file, int world, int ranks) {
  plan::Profile meta;
  meta.model = c.model;
  meta.world_size = world;
  const auto transport = getenv_opt("LOCKSTEP_TRANSPORT");
  meta.transport = transport ? *transport : std::string("auto");
  meta.batch = c.batch;
  const ddp::BucketOptions buckets = train::ddp_options(c).reducer.buckets;  // bucket_cap_mb
  meta.bucket_cap_bytes = double(buckets.bucket_cap_bytes);
  meta.first_bucket_bytes = double(buckets.first_bucket_bytes);
  std::vector<std::filesystem::path> traces;
  for (int r = 0; r < ranks; ++r) traces.emplace_back(trace_path(file, std::to_string(r)));
  plan::Profile p = plan::profile_from_traces(traces, meta);
  p.params = int64_t(p.grad_bytes() / sizeof(float));
  plan::save_profile(p, file);
  std::printf(
      "profile: %s (%s, %d workers, %zu buckets (cap %g MiB), forward %.3f ms, backward %.3f ms, "
      "step %.3f ms, median of %zu steps)\n",
      file.c_str(), p.model.c_str(), world, p.buckets.size(), c.bucket_cap_mb, p.forward * 1e3,
      p.backward * 1e3, p.step * 1e3, p.steps.size());
}

}  // namespace lockstep::apps
