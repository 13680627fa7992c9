// Checkpoints: one directory per saved step, written so that a crash at any moment never
// damages the last good one.
//
//   RUN_DIR/checkpoints/step-000000120/
//     model.safetensors      weights and buffers (opens in Python's safetensors / torch)
//     optimizer.safetensors  optimizer state tensors ("<param>.momentum_buffer", "step", ...)
//     zero-shard-*.safetensors  with ZeRO: each rank's optimizer state shard (zero_checkpoint.h)
//     state.json             model name, step, epoch, world size, lineage (lineage.h), the
//                            trainer's state (sampler position, RNG seeds, eval, ...) and the
//                            size + CRC-32 of every tensor file, verified on load; its own
//                            CRC-32 and the cross-checks of checkpoint_checks.h (step, model,
//                            finite values)
//
// The directory is assembled under a hidden temporary name, every file and the directory are
// fsynced, then it is renamed into place; afterwards the checkpoints of the saved one's
// lineage that the retention policy does not keep are removed (never another lineage's). A
// checkpoint of another lineage in the way (same step) moves to branches/<id>/. Weights are
// replicated, so a checkpoint loads at any world size.
//
//   save_checkpoint(run_dir / "checkpoints", {.model = "fmnist-cnn", .step = s, ...}, {.keep_last = 3});
//   if (auto p = latest_checkpoint(run_dir / "checkpoints")) Checkpoint c = load_checkpoint(*p);
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/train/file_io.h"
#include "lockstep/train/lineage.h"
#include "lockstep/train/safetensors.h"

namespace lockstep::train {

inline constexpr int kCheckpointVersion = 1;
inline constexpr uint64_t kMaxManifestBytes = uint64_t(64) << 20;
inline constexpr uint64_t kMaxTensorFileBytes = uint64_t(64) << 30;

// One more tensor file of a checkpoint (a plain file name, not one of the fixed ones).
struct TensorFile {
  std::string name;
  std::vector<TensorView> tensors;
  Metadata metadata;
};

// What to save; the tensor views point into live memory that must stay unchanged until
// save_checkpoint returns.
struct CheckpointSave {
  std::string model;
  int64_t step = 0;
  int64_t epoch = 0;
  int world_size = 1;
  std::vector<TensorView> weights;
  std::vector<TensorView> optimizer;
  std::vector<TensorFile> extra_files;  // recorded in state.json like the two above
  nlohmann::json state = nlohmann::json::object();
  Lineage lineage;  // "" (the default): as before lineages, one lineage for all
};

// Retention within the saved checkpoint's lineage (lineage.h): the newest keep_last, every
// keep_every-th step, the keep_best best by best_metric.
struct CheckpointOptions {
  int keep_last = 3;  // <= 0 keeps all
  int64_t keep_every = 0;
  int keep_best = 0;
  std::string best_metric = "test_loss";
  WriteHook hook;     // fault injection for tests
};

struct FileRecord {
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

// The parsed state.json.
struct Manifest {
  std::string model;
  int64_t step = 0;
  int64_t epoch = 0;
  int world_size = 1;
  std::map<std::string, FileRecord> files;
  nlohmann::json state = nlohmann::json::object();
  bool checksummed = false;  // state.json carried manifest_crc32 (and it matched)
  Lineage lineage;           // id "" when state.json has none (saved by an older build)
};

struct Checkpoint {
  std::filesystem::path path;
  Manifest manifest;
  SafetensorsData weights;
  SafetensorsData optimizer;
};

// Writes `dir`/step-<step>/ and prunes; returns the new checkpoint's path. On any failure
// (SystemError, or whatever the hook throws) the temporary is removed and every checkpoint
// saved before is left as it was.
std::filesystem::path save_checkpoint(const std::filesystem::path& dir, const CheckpointSave& ckpt,
                                      const CheckpointOptions& opts = {});

// Loads one checkpoint directory; DataError naming the file and the problem when anything is
// missing, truncated, fails its checksum or is malformed. Extra files are checked for presence
// and size here, and read (checksum verified) with load_checkpoint_file.
Checkpoint load_checkpoint(const std::filesystem::path& checkpoint_dir);
// state.json parsed, and every file it records present with its size (no tensor read).
Manifest load_manifest(const std::filesystem::path& checkpoint_dir);
SafetensorsData load_checkpoint_file(const Checkpoint& c, const std::string& name);

// Complete checkpoint directories under `dir` (step-N names only, any lineage), oldest first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& dir);
// The newest checkpoint of the current lineage (lineage.h) in `dir`.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& dir);

// What --resume names: a checkpoint directory (has state.json), a directory of checkpoints,
// or a run directory (uses its checkpoints/; the newest of the current lineage). DataError
// when there is none.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& path);

// Parses and validates a state.json text (hostile input); `origin` prefixes errors.
Manifest parse_manifest(std::string_view text, const std::string& origin);
std::string checkpoint_dir_name(int64_t step);
// The step of a "step-<digits>" directory name, or -1 for anything else (temporaries, strays).
int64_t checkpoint_step_of(const std::string& name);

}  // namespace lockstep::train
