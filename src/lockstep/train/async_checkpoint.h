// AsyncCheckpointWriter: checkpoints that do not stall training. submit() snapshots the
// tensors into memory (a copy, so training may continue at once) and a background thread
// writes them with save_checkpoint(); the next submit() or wait() first waits for that write
// and rethrows its error, so a failure is never lost, only reported one checkpoint later.
//
//   AsyncCheckpointWriter w(run_dir / "checkpoints", {.keep_last = 3});
//   w.submit(save);          // returns after the copy
//   fs::path p = w.wait();   // at the end (or before a crash-sensitive step)
#pragma once

#include <condition_variable>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "lockstep/train/checkpoint.h"

namespace lockstep::train {

class AsyncCheckpointWriter {
 public:
  AsyncCheckpointWriter(std::filesystem::path dir, CheckpointOptions opts);
  ~AsyncCheckpointWriter();  // waits for the write in flight (errors are logged)
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  // Waits for the previous write (rethrowing its error), copies `c` and starts writing it.
  void submit(const CheckpointSave& c);
  // Waits for the write in flight; returns the path of the last checkpoint written (if any)
  // and rethrows the error of a failed write.
  std::optional<std::filesystem::path> wait();
  bool busy() const;

 private:
  struct Snapshot {
    CheckpointSave meta;  // tensor views point into `weights` / `optimizer` / `extra`
    std::vector<StoredTensor> weights, optimizer;
    std::vector<std::vector<StoredTensor>> extra;  // one per meta.extra_files
  };
  static std::vector<StoredTensor> copy(const std::vector<TensorView>& views);

  std::filesystem::path dir_;
  CheckpointOptions opts_;
  mutable std::mutex mu_;
  std::thread thread_;
  std::exception_ptr error_;
  std::optional<std::filesystem::path> last_;
};

}  // namespace lockstep::train
