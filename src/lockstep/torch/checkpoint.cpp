// lockstep::torch checkpoints (checkpoint.h): a module's tensors and an optimizer's archive
// through train::save_checkpoint / load_checkpoint.
#include "lockstep/torch/checkpoint.h"

#include <cstring>
#include <sstream>

#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "lockstep/core/error.h"
#include "lockstep/torch/dtype.h"

namespace lockstep::torch {
namespace {

constexpr const char* kOptimizerTensor = "torch_optimizer";


// Every named parameter and buffer, in the module's order.
std::vector<std::pair<std::string, at::Tensor>> named_tensors(::torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace

std::filesystem::path save_checkpoint(const std::filesystem::path& dir, train::CheckpointSave ckpt,
                                      ::torch::nn::Module& module,
                                      ::torch::optim::Optimizer& optimizer,
                                      const train::CheckpointOptions& opts) {
  std::vector<at::Tensor> keep;  // contiguous CPU copies the views point into
  for (auto& [name, t] : named_tensors(module)) {
    const auto dt = lockstep_dtype(t.scalar_type());
    if (!dt)
      LOCKSTEP_THROW(InvalidArgument, "lockstep::torch::save_checkpoint: tensor '", name, "' is ",
                     c10::toString(t.scalar_type()),
                     ", which safetensors checkpoints cannot hold here");
    keep.push_back(t.detach().to(::torch::kCPU).contiguous());
    const at::Tensor& c = keep.back();
    const auto sizes = c.sizes();
    ckpt.weights.push_back({name,
                            *dt,
                            std::vector<int64_t>(sizes.begin(), sizes.end()),
                            {static_cast<const uint8_t*>(c.data_ptr()), size_t(c.nbytes())}});
  }
  ::torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream os;
  archive.save_to(os);
  const std::string bytes = os.str();
  ckpt.optimizer.push_back({kOptimizerTensor,
                            DType::u8,
                            {int64_t(bytes.size())},
                            {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}});
  return train::save_checkpoint(dir, ckpt, opts);
}

train::Manifest load_checkpoint(const std::filesystem::path& path, const std::string& model,
                                ::torch::nn::Module& module, ::torch::optim::Optimizer& optimizer) {
  train::Checkpoint c = train::load_checkpoint(path);
  const std::string where = (path / "model.safetensors").string();
  if (c.manifest.model != model)
    LOCKSTEP_THROW(DataError, path.string(), ": checkpoint of model '", c.manifest.model,
                   "', but this program trains '", model,
                   "'; point it at another checkpoint directory");
  ::torch::NoGradGuard no_grad;
  for (auto& [name, t] : named_tensors(module)) {
    const train::StoredTensor* s = c.weights.find(name);
    const auto dt = lockstep_dtype(t.scalar_type());
    const auto sizes = t.sizes();
    if (!s || !dt || s->dtype != *dt ||
        s->shape != std::vector<int64_t>(sizes.begin(), sizes.end()))
      LOCKSTEP_THROW(DataError, where, ": tensor '", name, "' is ",
                     s ? "of another dtype or shape" : "missing", " (the module holds ",
                     c10::toString(t.scalar_type()), " ", t.sizes(),
                     "); the checkpoint is of another architecture");
    t.copy_(::torch::from_blob(const_cast<uint8_t*>(s->bytes.data()), t.sizes(),
                               ::torch::TensorOptions().dtype(t.scalar_type())));
  }
  const train::StoredTensor* o = c.optimizer.find(kOptimizerTensor);
  if (!o)
    LOCKSTEP_THROW(DataError, (path / "optimizer.safetensors").string(), ": no '", kOptimizerTensor,
                   "' tensor (not saved by lockstep::torch::save_checkpoint)");
  std::istringstream is(std::string(o->bytes.begin(), o->bytes.end()));
  ::torch::serialize::InputArchive archive;
  archive.load_from(is);
  optimizer.load(archive);
  return c.manifest;
}

std::optional<train::Manifest> load_latest_checkpoint(const std::filesystem::path& dir,
                                                      const std::string& model,
                                                      ::torch::nn::Module& module,
                                                      ::torch::optim::Optimizer& optimizer) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return std::nullopt;
  const auto latest = train::latest_checkpoint(dir);
  if (!latest) return std::nullopt;
  return load_checkpoint(*latest, model, module, optimizer);
}

}  // namespace lockstep::torch
