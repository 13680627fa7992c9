#include "lockstep/train/metrics.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>

#include "lockstep/config.h"
#include "lockstep/core/error.h"
#include "lockstep/train/file_io.h"

namespace lockstep::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// JSON has no NaN/Inf; a diverged loss is logged as null (the record still says so).
json number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// Keeps the lines of records with step <= last_step (a resumed run rewrites the rest).
void truncate_after(const fs::path& path, int64_t last_step) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;  // a line torn by a crash
    if (j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() > last_step)
      continue;
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace

std::string iso8601_utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

RunEnv collect_run_env(int world_size, std::string backend, int threads) {
  RunEnv env;
  env.version = LOCKSTEP_VERSION;
  env.world_size = world_size;
  env.backend = std::move(backend);
  env.threads = threads;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) env.hostname = host;
  env.start_time = iso8601_utc_now();
  return env;
}

MetricsWriter::MetricsWriter(fs::path run_dir, bool enabled, int64_t resume_step)
    : run_dir_(std::move(run_dir)), enabled_(enabled) {
  if (!enabled_) return;
  fs::create_directories(run_dir_);
  if (resume_step >= 0) truncate_after(jsonl_path(), resume_step);
  file_ = std::fopen(jsonl_path().c_str(), resume_step >= 0 ? "a" : "w");
  if (!file_)
    throw SystemError(errno, str_cat("cannot open ", jsonl_path().string(), " for writing: ",
                                     std::strerror(errno), " (is the run directory writable?)"));
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write_run_info(const json& config, const RunEnv& env, const json& extra) {
  if (!enabled_) return;
  json j = {{"lockstep_version", env.version}, {"world_size", env.world_size},
            {"backend", env.backend},          {"hostname", env.hostname},
            {"threads", env.threads},          {"start_time", env.start_time},
            {"config", config}};
  for (const auto& [k, v] : extra.items()) j[k] = v;
  write_file_atomic(run_dir_ / "run.json", j.dump(2) + "\n");
}

void MetricsWriter::log(const json& record) {
  if (!enabled_) return;
  const std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw SystemError(errno, str_cat("cannot append to ", jsonl_path().string(), ": ",
                                     std::strerror(errno), " (disk full?)"));
}

void MetricsWriter::log_step(const StepRecord& r) {
  json j = {{"kind", "step"},  {"step", r.step},      {"epoch", r.epoch},
            {"loss", number(r.loss)}, {"lr", r.lr},   {"samples_per_s", r.samples_per_s},
            {"time_s", r.time_s}};
  if (r.grad_norm >= 0 || !std::isfinite(r.grad_norm)) j["grad_norm"] = number(r.grad_norm);
  log(j);
}

void MetricsWriter::log_eval(const EvalRecord& r) {
  log({{"kind", "eval"},           {"step", r.step},        {"epoch", r.epoch},
       {"loss", number(r.loss)},   {"accuracy", r.accuracy}, {"samples", r.samples},
       {"time_s", r.time_s}});
}

std::vector<json> read_jsonl(const fs::path& path) {
  std::ifstream in(path);
  if (!in) LOCKSTEP_THROW(DataError, path.string(), ": cannot open: ", std::strerror(errno));
  std::vector<json> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      LOCKSTEP_THROW(DataError, path.string(), ":", n, ": not a JSON object");
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace lockstep::train
