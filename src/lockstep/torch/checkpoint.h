// Checkpoints of a LibTorch module and optimizer through lockstep's own checkpoints
// (train/checkpoint.h: a step-N directory with model.safetensors, optimizer.safetensors and
// state.json, written atomically, checksummed, with lineages and retention), so that a
// LibTorch job under `lockstep run --max-restarts N` resumes bitwise where it left off.
//
//   namespace lt = lockstep::torch;
//   if (auto m = lt::load_latest_checkpoint(dir, "my-cnn", *net, opt))   // every rank
//     { start = m->step; sampler.load_state(SamplerState::parse(m->state["sampler"])); }
//   ... every N steps, on rank 0 only (replicas are identical):
//   lt::save_checkpoint(dir, {.model = "my-cnn", .step = s, .epoch = e, .world_size = w,
//                             .state = {{"sampler", sampler.state().to_string()}}}, *net, opt);
//
// model.safetensors holds every named parameter and buffer in its own dtype (it opens in
// Python's safetensors and torch); optimizer.safetensors holds the optimizer's own
// serialization (torch::optim's archive, as torch::save writes it) as one uint8 tensor,
// "torch_optimizer". Loading checks the model name, every tensor's dtype and shape, and the
// checkpoint's checksums (data::DataError naming the file otherwise).
#pragma once

#include <filesystem>
#include <optional>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "lockstep/train/checkpoint.h"

namespace lockstep::torch {

// Fills `ckpt.weights` and `ckpt.optimizer` from `module` and `optimizer` (the rest of
// `ckpt`, its model name, step, epoch, world size and state, comes from the caller) and
// saves it under `dir` (train::save_checkpoint). Returns the checkpoint's path.
std::filesystem::path save_checkpoint(const std::filesystem::path& dir, train::CheckpointSave ckpt,
                                      ::torch::nn::Module& module,
                                      ::torch::optim::Optimizer& optimizer,
                                      const train::CheckpointOptions& opts = {});

// Loads the checkpoint at `path` into `module` and `optimizer`; returns its manifest.
train::Manifest load_checkpoint(const std::filesystem::path& path, const std::string& model,
                                ::torch::nn::Module& module, ::torch::optim::Optimizer& optimizer);

// The newest checkpoint of the current lineage under `dir`, loaded; nullopt when there is none
// (or `dir` does not exist).
std::optional<train::Manifest> load_latest_checkpoint(const std::filesystem::path& dir,
                                                      const std::string& model,
                                                      ::torch::nn::Module& module,
                                                      ::torch::optim::Optimizer& optimizer);

}  // namespace lockstep::torch
