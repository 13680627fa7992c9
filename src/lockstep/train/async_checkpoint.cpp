#include "lockstep/train/async_checkpoint.h"

#include "lockstep/core/log.h"

namespace lockstep::train {

namespace fs = std::filesystem;

AsyncCheckpointWriter::AsyncCheckpointWriter(fs::path dir, CheckpointOptions opts)
    : dir_(std::move(dir)), opts_(std::move(opts)) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  try {
    wait();
  } catch (const std::exception& e) {
    LOCKSTEP_LOG(error, "background checkpoint write failed: ", e.what());
  }
}

std::vector<StoredTensor> AsyncCheckpointWriter::copy(const std::vector<TensorView>& views) {
  std::vector<StoredTensor> out;
  out.reserve(views.size());
  for (const auto& v : views)
    out.push_back({v.name, v.dtype, v.shape, std::vector<uint8_t>(v.bytes.begin(), v.bytes.end())});
  return out;
}

void AsyncCheckpointWriter::submit(const CheckpointSave& c) {
  wait();
  auto snap = std::make_shared<Snapshot>();
  snap->meta = c;
  snap->weights = copy(c.weights);
  snap->optimizer = copy(c.optimizer);
  snap->meta.weights.clear();
  snap->meta.optimizer.clear();
  for (const auto& t : snap->weights) snap->meta.weights.push_back(t.view());
  for (const auto& t : snap->optimizer) snap->meta.optimizer.push_back(t.view());
  for (TensorFile& f : snap->meta.extra_files) {
    snap->extra.push_back(copy(f.tensors));
    f.tensors.clear();
    for (const auto& t : snap->extra.back()) f.tensors.push_back(t.view());
  }
  thread_ = std::thread([this, snap] {
    try {
      fs::path p = save_checkpoint(dir_, snap->meta, opts_);
      std::lock_guard lock(mu_);
      last_ = std::move(p);
    } catch (...) {
      std::lock_guard lock(mu_);
      error_ = std::current_exception();
    }
  });
}

std::optional<fs::path> AsyncCheckpointWriter::wait() {
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  if (error_) {
    auto e = std::exchange(error_, nullptr);
    std::rethrow_exception(e);
  }
  return last_;
}

bool AsyncCheckpointWriter::busy() const { return thread_.joinable(); }

}  // namespace lockstep::train
