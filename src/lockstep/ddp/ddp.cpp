#include "lockstep/ddp/ddp.h"

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"
#include "lockstep/ddp/replica_check.h"

namespace lockstep::ddp {

ReducerOptions DistributedDataParallel::reducer_options(const DdpOptions& opt) {
  ReducerOptions r = opt.reducer;
  r.timeout = opt.timeout;
  if (opt.deterministic) r.rebuild_buckets = false;
  return r;
}

DistributedDataParallel::DistributedDataParallel(nn::Model& model, comm::ProcessGroup& pg, DdpOptions opt)
    : model_(model),
      pg_(pg),
      opt_(std::move(opt)),
      params_(model),
      timeline_(Timeline::from_env(pg.rank(), pg.size())),
      reducer_(pg, params_, reducer_options(opt_)) {
  verify_same_architecture(pg_, params_, opt_.timeout);
  // Every rank asks: the architectures (hence sizes) agree, and so does the capability.
  if (opt_.shared_gradients && pg_.size() > 1 &&
      pg_.supports(comm::Capability::shared_memory)) {
    size_t n = 0;
    for (size_t i = 0; i < params_.num_params(); ++i) n += params_.param_info(i).numel();
    shared_grads_ = pg_.alloc_shared(n * sizeof(float));
    if (params_.move_grads_to({reinterpret_cast<float*>(shared_grads_.get()), n})) {
      grads_home_.moved = &params_;
      reducer_.rebind();
    } else {
      shared_grads_.reset();
    }
  }
  broadcast_state(pg_, params_, true, true, 0, opt_.timeout);
  reducer_.set_comm_hook(make_comm_hook(opt_.comm_hook));
  reducer_.set_timeline(timeline_.get());
  reducer_.set_sync(opt_.gradient_sync);
  model_.on_grad_ready([this](size_t i) { reducer_.mark_ready(i); });
  LOCKSTEP_LOG(debug, "ddp: rank ", pg.rank(), "/", pg.size(), " ", params_.num_params(), " parameters in ",
               reducer_.plan().size(), " buckets, hook ", reducer_.comm_hook().name());
}

DistributedDataParallel::~DistributedDataParallel() { model_.on_grad_ready(nullptr); }

const nn::Tensor& DistributedDataParallel::forward(const nn::Tensor& x) {
  TimelineScope scope(timeline_.get(), "forward", "compute");
  if (opt_.broadcast_buffers && params_.num_buffers() > 0) broadcast_state(pg_, params_, false, true, 0, opt_.timeout);
  return model_.forward(x);
}

const StepResult& DistributedDataParallel::backward(const nn::Tensor& dy) {
  {
    TimelineScope scope(timeline_.get(), "backward", "compute");
    model_.backward(dy);
  }
  const bool synchronising = !in_no_sync_;
  last_ = reducer_.finalize();
  const float scale = grad_scale_ * join_scale_;
  if (scale != 1.0f && synchronising)
    for (size_t i = 0; i < params_.num_params(); ++i)
      for (float& g : params_.grad(i)) g *= scale;
  return last_;
}

bool DistributedDataParallel::step(nn::Optimizer& optimizer) {
  if (!last_.finite) {
    ++skipped_;
    LOCKSTEP_LOG(warn, "ddp: skipping step ", steps_, ": averaged gradient of '", last_.nonfinite_param,
                 "' is not finite (all ranks skip it)");
    last_ = {};
    return false;
  }
  bool stepped;
  {
    TimelineScope scope(timeline_.get(), "optimizer", "compute");
    stepped = optimizer.step();
  }
  if (!stepped) {  // it checked the averaged gradients itself (ZeroOptimizer) and said so on every rank
    ++skipped_;
    return false;
  }
  ++steps_;
  if (opt_.check_replicas_every > 0 && checks_on_ && steps_ % opt_.check_replicas_every == 0)
    verify_replicas_identical(pg_, params_, steps_, opt_.timeout);
  return true;
}

void DistributedDataParallel::shadow_step() {
  TimelineScope scope(timeline_.get(), "shadow step", "join");
  if (opt_.broadcast_buffers && params_.num_buffers() > 0) broadcast_state(pg_, params_, false, true, 0, opt_.timeout);
  if (!opt_.gradient_sync) return;
  params_.zero_grads();
  reducer_.mark_all_ready();
  last_ = reducer_.finalize();
}

}  // namespace lockstep::ddp
