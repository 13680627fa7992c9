#include "lockstep/train/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"
#include "lockstep/train/checkpoint_checks.h"

namespace lockstep::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimFile = "optimizer.safetensors";
constexpr const char* kManifestFile = "state.json";
constexpr const char* kFormat = "lockstep-checkpoint";

FileRecord write_tensor_file(const fs::path& path, const std::vector<TensorView>& tensors,
                             const Metadata& meta, const WriteHook& hook) {
  AtomicFile f(path, hook);
  f.write(safetensors_header(tensors, meta));
  for (const auto& t : tensors) f.write(t.bytes);
  f.commit();
  return {f.size(), f.crc32()};
}

json manifest_json(const CheckpointSave& c, const std::map<std::string, FileRecord>& files) {
  json f = json::object();
  for (const auto& [name, rec] : files) f[name] = {{"size", rec.size}, {"crc32", rec.crc32}};
  json j = {{"format", kFormat},
            {"version", kCheckpointVersion},
            {"model", c.model},
            {"step", c.step},
            {"epoch", c.epoch},
            {"world_size", c.world_size},
            {"files", f},
            {"state", c.state},
            {"lineage", c.lineage.to_json()}};
  j[kManifestChecksumKey] = manifest_checksum(j);
  return j;
}

// A file name inside the checkpoint directory: no path, nothing hidden.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name[0] != '.' && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// Removes temporaries that a crashed writer left behind (only hidden ".step-" names).
void remove_stale_temporaries(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".step-", 0) == 0) fs::remove_all(e.path(), ec);
  }
}

// Moves a checkpoint of another lineage that holds the step about to be installed to
// branches/<its id>/, where it stays listed and loadable (an abandoned branch is not lost
// when the current lineage reaches its steps). An unreadable one is replaced, as before.
void move_other_lineage_aside(const fs::path& final_dir, const Lineage& saving) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) return;
  const CheckpointEntry e = read_checkpoint_entry(final_dir);
  if (!e.error.empty() || e.lineage.id == saving.id) return;
  const fs::path branch = final_dir.parent_path() / "branches" / (e.lineage.id.empty() ? "none" : e.lineage.id);
  fs::create_directories(branch);
  fs::path to = branch / final_dir.filename();
  for (int i = 1; fs::exists(to, ec); ++i) to = branch / str_cat(final_dir.filename().string(), "-", i);
  fs::rename(final_dir, to);
  LOCKSTEP_LOG(info, "checkpoint ", final_dir.string(), " of lineage ", short_id(e.lineage.id),
               " (not the current one) moved to ", to.string());
}

// Puts the finished temporary directory in place of `final_dir` (replacing one of the same
// step and lineage, e.g. after a resume) and makes the rename durable.
void install(const fs::path& tmp, const fs::path& final_dir, const Lineage& saving) {
  move_other_lineage_aside(final_dir, saving);
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_dir, ec)) {
    old = tmp.string() + ".old";
    fs::rename(final_dir, old);
  }
  fs::rename(tmp, final_dir);
  fsync_dir(final_dir.parent_path());
  if (!old.empty()) fs::remove_all(old, ec);
}

// Removes the checkpoints of the saved one's lineage that the retention policy does not keep.
void prune(const fs::path& dir, const Lineage& lineage, const CheckpointOptions& o) {
  if (o.keep_last <= 0) return;
  const Retention r{o.keep_last, o.keep_every, o.keep_best, o.best_metric};
  std::error_code ec;
  for (const CheckpointEntry& e : not_retained(members_of(scan_checkpoints(dir), lineage), r)) {
    // Hidden first (one atomic rename), then deleted: a crash while deleting file by file
    // leaves a temporary for the next save to clean, never a visible, half-empty step-N.
    const fs::path doomed = dir / str_cat(".", e.path.filename().string(), ".pruned-", ::getpid());
    fs::rename(e.path, doomed, ec);
    if (!ec) fs::remove_all(doomed, ec);
    if (ec) LOCKSTEP_LOG(warn, "cannot remove old checkpoint ", e.path.string(), ": ", ec.message());
  }
}

template <class T>
T get_field(const json& j, const char* key, const std::string& origin) {
  if (!j.contains(key)) LOCKSTEP_THROW(DataError, origin, ": missing field '", key, "'");
  const json& v = j[key];
  if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) LOCKSTEP_THROW(DataError, origin, ": field '", key, "' is not a string");
  } else {
    if (!v.is_number_integer())
      LOCKSTEP_THROW(DataError, origin, ": field '", key, "' is not an integer");
    if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(std::numeric_limits<T>::max())
                               : (v.get<int64_t>() < 0 ||
                                  v.get<int64_t>() > int64_t(std::numeric_limits<T>::max())))
      LOCKSTEP_THROW(DataError, origin, ": field '", key, "' is out of range");
  }
  return v.get<T>();
}

SafetensorsData load_tensor_file(const fs::path& dir, const Manifest& m, const char* name) {
  const fs::path path = dir / name;
  const auto it = m.files.find(name);
  if (it == m.files.end())
    LOCKSTEP_THROW(DataError, (dir / kManifestFile).string(), ": no record of ", name);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    LOCKSTEP_THROW(DataError, path.string(), ": missing (checkpoint incomplete or moved)");
  if (uint64_t(st.st_size) != it->second.size)
    LOCKSTEP_THROW(DataError, path.string(), ": size is ", st.st_size, " bytes but state.json records ",
                   it->second.size, " (truncated or replaced file)");
  const auto bytes = read_file_bounded(path, std::min(it->second.size, kMaxTensorFileBytes));
  const uint32_t crc = crc32_of(bytes);
  if (crc != it->second.crc32)
    LOCKSTEP_THROW(DataError, path.string(), ": CRC-32 is ", crc, " but state.json records ",
                   it->second.crc32, " (the file is corrupt; resume from an older checkpoint)");
  SafetensorsData d = decode_safetensors(bytes, path.string());
  check_tensor_file(d, m, path.string());
  return d;
}

}  // namespace

int64_t checkpoint_step_of(const std::string& name) {
  if (name.size() < 6 || name.rfind("step-", 0) != 0) return -1;
  int64_t v = -1;
  const char* b = name.data() + 5;
  const char* e = name.data() + name.size();
  auto [p, ec] = std::from_chars(b, e, v);
  return (ec == std::errc() && p == e && v >= 0) ? v : -1;
}

std::string checkpoint_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%09lld", static_cast<long long>(step));
  return buf;
}

fs::path save_checkpoint(const fs::path& dir, const CheckpointSave& c, const CheckpointOptions& opts) {
  if (c.step < 0) LOCKSTEP_THROW(InvalidArgument, "save_checkpoint: negative step ", c.step);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw SystemError(ec.value(), str_cat("cannot create the checkpoint directory ", dir.string(), ": ",
                                          ec ? ec.message() : "a file of that name exists"));
  remove_stale_temporaries(dir);
  static std::atomic<uint64_t> counter{0};
  const fs::path final_dir = dir / checkpoint_dir_name(c.step);
  const fs::path tmp =
      dir / str_cat(".", checkpoint_dir_name(c.step), ".tmp-", ::getpid(), "-", counter++);
  try {
    fs::create_directory(tmp);
    const Metadata meta = {{"format", "pt"}, {"lockstep.model", c.model},
                           {"lockstep.step", std::to_string(c.step)}};
    std::map<std::string, FileRecord> files;
    files[kModelFile] = write_tensor_file(tmp / kModelFile, c.weights, meta, opts.hook);
    files[kOptimFile] = write_tensor_file(tmp / kOptimFile, c.optimizer, meta, opts.hook);
    for (const TensorFile& f : c.extra_files) {
      if (!plain_file_name(f.name) || files.count(f.name) || f.name == kManifestFile)
        LOCKSTEP_THROW(InvalidArgument, "save_checkpoint: extra file name '", f.name, "' is taken or not a plain name");
      Metadata m = meta;
      m.insert(f.metadata.begin(), f.metadata.end());
      files[f.name] = write_tensor_file(tmp / f.name, f.tensors, m, opts.hook);
    }
    AtomicFile mf(tmp / kManifestFile, opts.hook);
    mf.write(manifest_json(c, files).dump(2) + "\n");
    mf.commit();
    install(tmp, final_dir, c.lineage);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  prune(dir, c.lineage, opts);
  return final_dir;
}

Manifest parse_manifest(std::string_view text, const std::string& origin) {
  if (!json_nesting_within(text, 64))
    LOCKSTEP_THROW(DataError, origin, ": JSON is nested too deeply");
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    LOCKSTEP_THROW(DataError, origin, ": not a valid JSON object (truncated or corrupt)");
  if (!j.contains("format") || j["format"] != kFormat)
    LOCKSTEP_THROW(DataError, origin, ": 'format' is not \"", kFormat, "\"");
  const int version = get_field<int>(j, "version", origin);
  if (version != kCheckpointVersion)
    LOCKSTEP_THROW(DataError, origin, ": checkpoint version ", version, " is not supported (this build reads ",
                   kCheckpointVersion, ")");
  Manifest m;
  m.checksummed = verify_manifest_checksum(j, origin);
  m.model = get_field<std::string>(j, "model", origin);
  m.step = get_field<int64_t>(j, "step", origin);
  m.epoch = get_field<int64_t>(j, "epoch", origin);
  m.world_size = get_field<int>(j, "world_size", origin);
  if (m.world_size < 1) LOCKSTEP_THROW(DataError, origin, ": world_size must be >= 1");
  if (!j.contains("files") || !j["files"].is_object())
    LOCKSTEP_THROW(DataError, origin, ": missing object 'files'");
  for (const auto& [name, rec] : j["files"].items()) {
    if (!rec.is_object()) LOCKSTEP_THROW(DataError, origin, ": files.", name, " is not an object");
    if (!plain_file_name(name) || name == kManifestFile)
      LOCKSTEP_THROW(DataError, origin, ": files: '", name, "' is not a plain file name of the checkpoint");
    m.files[name] = {get_field<uint64_t>(rec, "size", origin), get_field<uint32_t>(rec, "crc32", origin)};
  }
  if (j.contains("state")) {
    if (!j["state"].is_object()) LOCKSTEP_THROW(DataError, origin, ": 'state' is not an object");
    m.state = j["state"];
  }
  if (j.contains("lineage")) m.lineage = Lineage::from_json(j["lineage"], origin);
  return m;
}

Manifest load_manifest(const fs::path& checkpoint_dir) {
  const fs::path mpath = checkpoint_dir / kManifestFile;
  const auto text = read_file_bounded(mpath, kMaxManifestBytes);
  Manifest m = parse_manifest({reinterpret_cast<const char*>(text.data()), text.size()}, mpath.string());
  if (!m.checksummed)
    LOCKSTEP_LOG(warn, mpath.string(), ": no '", kManifestChecksumKey, "' (saved by an older lockstep); its "
                 "fields are cross-checked, but an edit to them cannot be detected");
  check_step_matches_dir_name(checkpoint_dir, m);
  // Every recorded file is there with its size (a missing shard is reported before any state
  // is read; its checksum is verified when it is read).
  for (const auto& [name, rec] : m.files) {
    const fs::path path = checkpoint_dir / name;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      LOCKSTEP_THROW(DataError, path.string(), ": missing (checkpoint incomplete or moved; resume from an older "
                     "checkpoint)");
    if (uint64_t(st.st_size) != rec.size)
      LOCKSTEP_THROW(DataError, path.string(), ": size is ", st.st_size, " bytes but state.json records ",
                     rec.size, " (truncated or replaced file; resume from an older checkpoint)");
  }
  return m;
}

Checkpoint load_checkpoint(const fs::path& checkpoint_dir) {
  Checkpoint c;
  c.path = checkpoint_dir;
  c.manifest = load_manifest(checkpoint_dir);
  c.weights = load_tensor_file(checkpoint_dir, c.manifest, kModelFile);
  c.optimizer = load_tensor_file(checkpoint_dir, c.manifest, kOptimFile);
  return c;
}

SafetensorsData load_checkpoint_file(const Checkpoint& c, const std::string& name) {
  if (!plain_file_name(name))
    LOCKSTEP_THROW(DataError, (c.path / kManifestFile).string(), ": '", name, "' is not a plain file name");
  return load_tensor_file(c.path, c.manifest, name.c_str());
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const int64_t step = checkpoint_step_of(e.path().filename().string());
    if (step >= 0 && e.is_directory(ec)) found.emplace_back(step, e.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [_, p] : found) out.push_back(std::move(p));
  return out;
}

std::optional<fs::path> latest_checkpoint(const fs::path& dir) {
  const auto all = scan_checkpoints(dir);
  const auto members = members_of(all, current_lineage(dir, all));
  if (members.empty()) return std::nullopt;
  return members.back().path;
}

fs::path resolve_checkpoint(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(path / kManifestFile, ec)) return path;
  for (const fs::path& dir : {path / "checkpoints", path}) {
    if (auto p = latest_checkpoint(dir)) return *p;
  }
  LOCKSTEP_THROW(DataError, path.string(),
                 ": no checkpoint found (expected a step-N directory with state.json, a "
                 "directory of them, or a run directory with checkpoints/)");
}

}  // namespace lockstep::train
