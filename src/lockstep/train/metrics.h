// Run records: one JSON object per line in RUN_DIR/metrics.jsonl for every logged training
// step ("kind": "step") and every evaluation ("kind": "eval"), plus RUN_DIR/run.json with the
// configuration and the environment (version, world size, backend, host, threads, start).
// Only rank 0 writes; other ranks construct a disabled writer and every call is a no-op.
//
//   MetricsWriter m(run_dir, rank == 0, /*resume_step=*/-1);
//   m.write_run_info(config_json, collect_run_env(world, backend, threads));
//   m.log_step({.step = s, .epoch = e, .loss = l, .lr = lr, .samples_per_s = r, .time_s = t});
//   m.log_eval({.step = s, .epoch = e, .loss = l, .accuracy = a, .samples = n});
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lockstep::train {

struct StepRecord {
  int64_t step = 0;  // optimizer steps done (1 after the first)
  int64_t epoch = 0;
  double loss = 0;   // mean over the global batch
  double lr = 0;
  double grad_norm = -1;  // before clipping; < 0 when not computed
  double samples_per_s = 0;
  double time_s = 0;  // since the start of this process's training
};

struct EvalRecord {
  int64_t step = 0;
  int64_t epoch = 0;
  double loss = 0;
  double accuracy = 0;  // in [0, 1]
  int64_t samples = 0;  // counted across all ranks
  double time_s = 0;
};

struct RunEnv {
  std::string version;
  int world_size = 1;
  std::string backend;
  std::string hostname;
  int threads = 1;
  std::string start_time;  // ISO 8601, UTC
};

// Fills the host name, start time and version; the caller gives the rest.
RunEnv collect_run_env(int world_size, std::string backend, int threads);
std::string iso8601_utc_now();

class MetricsWriter {
 public:
  // resume_step >= 0 keeps only the records of steps <= resume_step from an earlier run, so
  // a resumed run neither repeats nor loses a step in the log; < 0 starts a new file.
  MetricsWriter(std::filesystem::path run_dir, bool enabled, int64_t resume_step = -1);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // run.json, written atomically (replaced on resume, keeping the first start time).
  void write_run_info(const nlohmann::json& config, const RunEnv& env,
                      const nlohmann::json& extra = nlohmann::json::object());
  void log_step(const StepRecord& r);
  void log_eval(const EvalRecord& r);
  // Any other record (e.g. {"kind": "summary", ...}).
  void log(const nlohmann::json& record);

  bool enabled() const { return enabled_; }
  std::filesystem::path jsonl_path() const { return run_dir_ / "metrics.jsonl"; }

 private:
  std::filesystem::path run_dir_;
  bool enabled_;
  FILE* file_ = nullptr;
};

// Reads metrics.jsonl (for reports and tests); DataError naming the file and line for a
// malformed line.
std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path);

}  // namespace lockstep::train
