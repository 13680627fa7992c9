// The pieces of training state that the Trainer builds from a TrainConfig and moves in and
// out of checkpoints: the optimizer, the learning-rate schedule (warm-up, linear scaling
// rule), and the conversion between a live nn::Model / nn::Optimizer and checkpoint tensors
// (ZeRO's sharded optimizer state: zero_checkpoint.h).
#pragma once

#include <memory>
#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/data/sampler.h"
#include "lockstep/ddp/ddp.h"
#include "lockstep/ddp/params.h"
#include "lockstep/nn/model.h"
#include "lockstep/nn/optim.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/config.h"

namespace lockstep::train {

// The learning rate after the scaling rule: lr * global_batch / base_batch for "linear".
double effective_lr(const TrainConfig& c, int64_t global_batch);

// True when the configured optimizer averages the gradients over the ranks itself (ZeRO), so
// DDP is built without gradient sync (the answer of that optimizer's reduces_gradients()).
bool optimizer_reduces_gradients(const TrainConfig& c);
// DDP's options for this configuration: gradient sync unless the optimizer reduces, fixed
// buckets (deterministic), the bucket cap of bucket_cap_mb and a first bucket of at most that.
ddp::DdpOptions ddp_options(const TrainConfig& c);
// The configured optimizer over `model`, or (zero = true) ddp::ZeroOptimizer over `params`,
// DDP's view of the model (after DDP, which may re-lay the gradients out). Collective with ZeRO.
std::unique_ptr<nn::Optimizer> make_optimizer(const TrainConfig& c, nn::Model& model, ddp::ParamSource& params,
                                              comm::ProcessGroup& pg, double lr, Millis timeout);
// Warm-up (if any) followed by the configured schedule over the remaining steps.
std::unique_ptr<nn::LrSchedule> make_schedule(const TrainConfig& c, double lr, int64_t total_steps);

// Views of every parameter and buffer ("<name>"), and of the optimizer's state; valid while
// the model and optimizer live and are not stepped.
std::vector<TensorView> model_views(nn::Model& model);
std::vector<TensorView> optimizer_views(nn::Optimizer& opt);

// Copies checkpoint tensors into the model / optimizer. DataError naming the checkpoint and
// the tensor when one is missing or has another shape (a checkpoint of another model).
void restore_model(nn::Model& model, const SafetensorsData& weights, const std::string& origin);
void restore_optimizer(nn::Optimizer& opt, const SafetensorsData& state, const std::string& origin);

// A checkpoint's sampler position ('state.sampler'), checked against the rest of state.json
// (`origin`): DataError naming the field when it is missing or malformed, was saved for a data
// set of another size than `dataset_size`, lies in another epoch than 'epoch', or is not where
// 'step' steps of 'state.global_batch' from 'state.sampler_start' lead (the last step of an
// epoch may be short: fewer micro-batches than grad_accum).
data::SamplerState resume_sampler_state(const Manifest& m, const std::string& origin, int64_t dataset_size);

}  // namespace lockstep::train
