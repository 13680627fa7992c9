#include "lockstep/train/lineage.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/file_io.h"

namespace lockstep::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kHeadFile = "HEAD.json";
constexpr uint64_t kMaxHeadBytes = uint64_t(1) << 20;

bool plain_id(const std::string& id) {
  return id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '-';
         });
}

std::string id_field(const json& j, const char* key, const std::string& origin) {
  if (!j.contains(key) || !j[key].is_string() || !plain_id(j[key].get<std::string>()))
    LOCKSTEP_THROW(DataError, origin, ": lineage field '", key, "' is missing or not an id");
  return j[key].get<std::string>();
}

}  // namespace

CheckpointEntry read_checkpoint_entry(const fs::path& dir) {
  CheckpointEntry e;
  e.path = dir;
  try {
    const auto text = read_file_bounded(dir / "state.json", kMaxManifestBytes);
    const Manifest m = parse_manifest({reinterpret_cast<const char*>(text.data()), text.size()},
                                      (dir / "state.json").string());
    e.step = m.step;
    e.epoch = m.epoch;
    e.lineage = m.lineage;
    if (m.state.contains("eval") && m.state["eval"].is_object()) e.eval = m.state["eval"];
  } catch (const Error& err) {
    e.error = err.what();
  }
  return e;
}

namespace {

void scan_into(const fs::path& dir, std::vector<CheckpointEntry>& out) {
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(dir, ec)) {
    const int64_t step = checkpoint_step_of(d.path().filename().string());
    if (step < 0 || !d.is_directory(ec)) continue;
    CheckpointEntry e = read_checkpoint_entry(d.path());
    if (!e.error.empty()) e.step = step;  // unreadable: the name still says which step
    out.push_back(std::move(e));
  }
}

// The value of the policy's metric in `e`'s eval (NaN when there is none).
double metric_of(const CheckpointEntry& e, const std::string& metric) {
  if (!e.eval.is_object() || !e.eval.contains(metric) || !e.eval[metric].is_number()) return NAN;
  return e.eval[metric].get<double>();
}

}  // namespace

bool Lineage::contains(const std::string& of, int64_t step) const {
  if (of == id) return true;
  return std::any_of(chain.begin(), chain.end(),
                     [&](const LineageLink& l) { return l.id == of && step <= l.until; });
}

Lineage Lineage::fork(int64_t step) const {
  Lineage child{new_lineage_id(), chain};
  // A link inherits nothing newer than the fork point.
  for (LineageLink& l : child.chain) l.until = std::min(l.until, step);
  child.chain.push_back({id, step});
  return child;
}

json Lineage::to_json() const {
  json c = json::array();
  for (const LineageLink& l : chain) c.push_back({{"id", l.id}, {"until", l.until}});
  return {{"id", id}, {"chain", c}};
}

Lineage Lineage::from_json(const json& j, const std::string& origin) {
  if (!j.is_object() || !j.contains("chain") || !j["chain"].is_array() ||
      j["chain"].size() > 100000)
    LOCKSTEP_THROW(DataError, origin, ": 'lineage' needs 'id' and an array 'chain'");
  Lineage l{id_field(j, "id", origin), {}};
  for (const json& link : j["chain"]) {
    if (!link.is_object() || !link.contains("until") || !link["until"].is_number_integer() ||
        link["until"].get<int64_t>() < 0)
      LOCKSTEP_THROW(DataError, origin,
                     ": lineage.chain: each link needs an 'id' and a step 'until' >= 0");
    l.chain.push_back({id_field(link, "id", origin), link["until"].get<int64_t>()});
  }
  return l;
}

std::string new_lineage_id() {
  std::random_device rd;
  std::mt19937_64 g((uint64_t(rd()) << 32) ^ rd() ^
                    uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%012llx",
                static_cast<unsigned long long>(g() & 0xffffffffffffull));
  return buf;
}

std::string short_id(const std::string& id) {
  return id.empty() ? "(none)" : id.substr(0, 8);
}

std::optional<Head> read_head(const fs::path& ckpt_dir) {
  const fs::path path = ckpt_dir / kHeadFile;
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  const auto text = read_file_bounded(path, kMaxHeadBytes);
  const json j = json::parse(text.begin(), text.end(), nullptr, false);
  const std::string origin = path.string();
  if (j.is_discarded() || !j.is_object() || !j.contains("lineage"))
    LOCKSTEP_THROW(DataError, origin,
                   ": not a lineage record; delete it to make the newest checkpoint's "
                   "lineage current, or run `lockstep checkpoints rollback`");
  Head h{Lineage::from_json(j["lineage"], origin), "", ""};
  if (j.contains("origin") && j["origin"].is_string()) h.origin = j["origin"].get<std::string>();
  if (j.contains("job") && j["job"].is_string()) h.job = j["job"].get<std::string>();
  return h;
}

void write_head(const fs::path& ckpt_dir, const Head& h) {
  std::error_code ec;
  fs::create_directories(ckpt_dir, ec);
  if (ec || !fs::is_directory(ckpt_dir))
    throw SystemError(ec.value(),
                      str_cat("cannot create the checkpoint directory ", ckpt_dir.string(), ": ",
                              ec ? ec.message() : "a file of that name exists",
                              " (fix the path or pick another --run-dir)"));
  const json j = {{"lineage", h.lineage.to_json()}, {"origin", h.origin}, {"job", h.job}};
  write_file_atomic(ckpt_dir / kHeadFile, j.dump(2) + "\n");
}

std::vector<CheckpointEntry> scan_checkpoints(const fs::path& ckpt_dir) {
  std::vector<CheckpointEntry> out;
  scan_into(ckpt_dir, out);
  const size_t top = out.size();
  std::error_code ec;
  for (const auto& b : fs::directory_iterator(ckpt_dir / "branches", ec))
    if (b.is_directory(ec)) scan_into(b.path(), out);
  std::vector<size_t> order(out.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return out[a].step != out[b].step ? out[a].step < out[b].step : (a < top) > (b < top);
  });
  std::vector<CheckpointEntry> sorted;
  for (size_t i : order) sorted.push_back(std::move(out[i]));
  return sorted;
}

Lineage current_lineage(const fs::path& ckpt_dir, const std::vector<CheckpointEntry>& all) {
  if (auto h = read_head(ckpt_dir)) return h->lineage;
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (it->error.empty()) return it->lineage;
  return {};
}

std::vector<CheckpointEntry> members_of(const std::vector<CheckpointEntry>& all,
                                        const Lineage& lineage) {
  std::vector<CheckpointEntry> out;
  for (const CheckpointEntry& e : all)
    if (e.error.empty() && lineage.contains(e.lineage.id, e.step)) out.push_back(e);
  return out;
}

std::string verify_checkpoint(const fs::path& dir, Checkpoint* keep) {
  try {
    Checkpoint c = load_checkpoint(dir);  // model and optimizer: size, CRC-32, decoded
    for (const auto& [name, rec] : c.manifest.files)
      if (name != "model.safetensors" && name != "optimizer.safetensors")
        load_checkpoint_file(c, name);  // checked, not kept: each rank reads its own shards
    if (keep) *keep = std::move(c);
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return str_cat(dir.string(), ": ", e.what());
  }
  return "";
}

std::optional<CheckpointEntry> newest_intact(const std::vector<CheckpointEntry>& members,
                                             std::vector<std::string>* skipped,
                                             Checkpoint* loaded) {
  for (auto it = members.rbegin(); it != members.rend(); ++it) {
    const std::string problem = verify_checkpoint(it->path, loaded);
    if (problem.empty()) return *it;
    if (skipped) skipped->push_back(str_cat(it->path.string(), ": ", problem));
  }
  return std::nullopt;
}

std::vector<CheckpointEntry> not_retained(const std::vector<CheckpointEntry>& members,
                                          const Retention& r) {
  std::vector<bool> keep(members.size(), r.keep_last <= 0);
  for (size_t i = 0; i < members.size(); ++i) {
    if (r.keep_last > 0 && i + size_t(r.keep_last) >= members.size()) keep[i] = true;
    if (r.keep_every > 0 && members[i].step % r.keep_every == 0) keep[i] = true;
  }
  if (r.keep_best > 0) {
    const bool higher = r.best_metric == "test_acc";
    std::vector<size_t> scored;
    for (size_t i = 0; i < members.size(); ++i)
      if (std::isfinite(metric_of(members[i], r.best_metric))) scored.push_back(i);
    std::stable_sort(scored.begin(), scored.end(), [&](size_t a, size_t b) {
      const double x = metric_of(members[a], r.best_metric),
                   y = metric_of(members[b], r.best_metric);
      return higher ? x > y : x < y;
    });
    for (size_t k = 0; k < scored.size() && k < size_t(r.keep_best); ++k) keep[scored[k]] = true;
  }
  std::vector<CheckpointEntry> out;
  for (size_t i = 0; i < members.size(); ++i)
    if (!keep[i]) out.push_back(members[i]);
  return out;
}

}  // namespace lockstep::train
