#include "lockstep/ddp/zero_optimizer.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"

namespace lockstep::ddp {

std::string ZeroMemoryReport::str() const {
  return str_cat("optimizer state per rank: ", state_bytes_local, " B (unsharded ", state_bytes_unsharded,
                 " B, saved ", saved_bytes(), " B); scratch ", scratch_bytes, " B");
}

ZeroOptimizer::ZeroOptimizer(comm::ProcessGroup& pg, ParamSource& params, ZeroSgdOptions opt, Millis timeout)
    : nn::Optimizer(opt.lr), pg_(pg), params_(params), opt_(opt), timeout_(timeout) {
  if (opt.momentum < 0.0f || opt.weight_decay < 0.0f || (opt.nesterov && opt.momentum <= 0.0f))
    LOCKSTEP_THROW(InvalidArgument, "ZeroOptimizer: momentum and weight_decay must be >= 0; Nesterov needs momentum > 0");
  bind_flat();
  const size_t w = size_t(pg.size());
  shard_ = total_ / w;
  tail_ = total_ - shard_ * w;
  if (opt.momentum > 0.0f) {
    momentum_ = AlignedBuffer((shard_ + tail_ + 1) * sizeof(float));
    std::memset(momentum_.data(), 0, momentum_.size());
  }
  grad_slice_ = AlignedBuffer((shard_ + 1) * sizeof(float));
  value_slice_ = pg.alloc_shared((shard_ + 1) * sizeof(float));  // collective: every rank's shard_ is equal
}

// Zero copy when values and gradients each tile one range with identical relative offsets.
void ZeroOptimizer::bind_flat() {
  const size_t n = params_.num_params();
  offsets_.assign(n, 0);
  if (n == 0) return;
  float* v0 = params_.value(0).data();
  float* g0 = params_.grad(0).data();
  for (size_t i = 0; i < n; ++i) {
    v0 = std::min(v0, params_.value(i).data());
    g0 = std::min(g0, params_.grad(i).data());
    total_ += params_.value(i).size();
  }
  zero_copy_ = true;
  for (size_t i = 0; i < n && zero_copy_; ++i) {
    const size_t off = size_t(params_.value(i).data() - v0);
    zero_copy_ = params_.grad(i).data() - g0 == ptrdiff_t(off) && off + params_.value(i).size() <= total_;
    offsets_[i] = off;
  }
  if (zero_copy_) {
    values_ = {v0, total_};
    grads_ = {g0, total_};
    return;
  }
  size_t off = 0;  // staged: parameter index order
  for (size_t i = 0; i < n; ++i) {
    offsets_[i] = off;
    off += params_.value(i).size();
  }
  stage_values_ = AlignedBuffer((total_ + 1) * sizeof(float));
  stage_grads_ = AlignedBuffer((total_ + 1) * sizeof(float));
  values_ = stage_values_.as<float>().first(total_);
  grads_ = stage_grads_.as<float>().first(total_);
}

void ZeroOptimizer::stage_in() {
  if (zero_copy_) return;
  for (size_t i = 0; i < params_.num_params(); ++i) {
    std::memcpy(values_.data() + offsets_[i], params_.value(i).data(), params_.value(i).size_bytes());
    std::memcpy(grads_.data() + offsets_[i], params_.grad(i).data(), params_.grad(i).size_bytes());
  }
}

void ZeroOptimizer::stage_out() {
  if (zero_copy_) return;
  for (size_t i = 0; i < params_.num_params(); ++i)
    std::memcpy(params_.value(i).data(), values_.data() + offsets_[i], params_.value(i).size_bytes());
}

// Exactly nn::Sgd's arithmetic, element by element, so results match plain DDP + Sgd.
void ZeroOptimizer::sgd(float* w, const float* g, float* b, size_t n) const {
  const float mu = opt_.momentum, wd = opt_.weight_decay, lr = lr_;
  if (mu == 0.0f) {
    for (size_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const float d = g[i] + wd * w[i];
    b[i] = mu * b[i] + d;
    w[i] -= lr * (opt_.nesterov ? d + mu * b[i] : b[i]);
  }
}

// Phases: reduce the gradients (this rank's slice by reduce-scatter, the tail by all-reduce),
// agree on whether all of them are finite (one i32 max), then update and all-gather. A bad
// step changes nothing on any rank, momentum included, so the replicas stay equal.
bool ZeroOptimizer::step() {
  stage_in();
  const size_t w = size_t(pg_.size()), r = size_t(pg_.rank());
  float* mom = momentum_.size() ? momentum_.as<float>().data() : nullptr;
  float* gs = grad_slice_.as<float>().data();
  float* vs = reinterpret_cast<float*>(value_slice_.get());
  float* tail_g = grads_.data() + shard_ * w;
  comm::Work tail_work;
  if (tail_ > 0) tail_work = pg_.allreduce(tail_g, tail_, DType::f32, comm::ReduceOp::avg);
  if (shard_ > 0) pg_.reduce_scatter(grads_.data(), gs, shard_, DType::f32, comm::ReduceOp::avg).wait(timeout_);
  if (tail_ > 0) tail_work.wait(timeout_);
  if (!agree_finite({gs, shard_}, {tail_g, tail_})) return false;
  if (shard_ > 0) {
    std::memcpy(vs, values_.data() + r * shard_, shard_ * sizeof(float));
    sgd(vs, gs, mom, shard_);
  }
  comm::Work gather;
  if (shard_ > 0) gather = pg_.allgather(vs, values_.data(), shard_, DType::f32);
  if (tail_ > 0) sgd(values_.data() + shard_ * w, tail_g, mom ? mom + shard_ : nullptr, tail_);
  if (gather.valid()) gather.wait(timeout_);
  stage_out();
  step_[0] += 1.0f;
  return true;
}

std::vector<nn::NamedSpan> ZeroOptimizer::state() { return {{"step", std::span<float>(step_, 1)}}; }

// Whether every rank's reduced slice and tail are finite. The tail is the same on every
// rank, but each rank's slice is its own: one max over a flag tells them all alike.
bool ZeroOptimizer::agree_finite(std::span<const float> slice, std::span<const float> tail) {
  auto bad = [](std::span<const float> x) {
    uint32_t any = 0;  // branch-free, so the common all-finite pass vectorises
    for (float v : x) any |= uint32_t((std::bit_cast<uint32_t>(v) & 0x7f800000u) == 0x7f800000u);
    return any != 0;
  };
  const bool here = bad(slice) || bad(tail);
  int32_t flag[1] = {here ? 1 : 0};
  if (pg_.size() > 1) pg_.allreduce(flag, 1, DType::i32, comm::ReduceOp::max).wait(timeout_);
  if (flag[0] == 0) return true;
  LOCKSTEP_LOG(warn, "zero: skipping a step: an averaged gradient is not finite in ",
               here ? "this rank's slice or the tail" : "another rank's slice", " (all ranks skip it)");
  ++skipped_;
  return false;
}

FlatRange ZeroOptimizer::state_range() const {
  const size_t r = size_t(pg_.rank());
  return {r * shard_, (r + 1) * shard_};
}

FlatRange ZeroOptimizer::tail_range() const { return {total_ - tail_, total_}; }

// The momentum buffer holds the slice, then the tail.
std::span<float> ZeroOptimizer::local(FlatRange range) const {
  if (!has_state() || range.size() == 0) return {};
  float* mom = const_cast<AlignedBuffer&>(momentum_).as<float>().data();
  const FlatRange own = state_range(), tail = tail_range();
  if (range.begin >= own.begin && range.end <= own.end) return {mom + (range.begin - own.begin), range.size()};
  if (range.begin >= tail.begin && range.end <= tail.end) return {mom + shard_ + (range.begin - tail.begin), range.size()};
  return {};
}

std::span<const float> ZeroOptimizer::state(FlatRange range) const {
  LOCKSTEP_CHECK(range.begin <= range.end && range.end <= total_, "ZeroOptimizer::state: range [", range.begin,
                 ", ", range.end, ") outside the ", total_, " parameters");
  if (range.size() == 0) return {};
  const std::span<float> s = local(range);
  LOCKSTEP_CHECK(!has_state() || s.size() == range.size(), "ZeroOptimizer::state: rank ", pg_.rank(),
                 " holds [", state_range().begin, ", ", state_range().end, ") and the tail [", tail_range().begin,
                 ", ", tail_range().end, "), not [", range.begin, ", ", range.end, ")");
  return s;
}

size_t ZeroOptimizer::import_state(size_t offset, std::span<const float> values) {
  if (!has_state()) return 0;
  size_t copied = 0;
  for (const FlatRange own : {state_range(), tail_range()}) {
    const size_t b = std::max(own.begin, offset), e = std::min(own.end, offset + values.size());
    if (b >= e) continue;
    const std::span<float> dst = local({b, e});
    std::memcpy(dst.data(), values.data() + (b - offset), (e - b) * sizeof(float));
    copied += e - b;
  }
  return copied;
}

ZeroMemoryReport ZeroOptimizer::memory() const {
  ZeroMemoryReport m;
  const size_t slots = opt_.momentum > 0.0f ? 1 : 0;
  m.state_bytes_unsharded = slots * total_ * sizeof(float);
  m.state_bytes_local = slots * (shard_ + tail_) * sizeof(float);
  m.scratch_bytes = 2 * shard_ * sizeof(float) + (zero_copy_ ? 0 : 2 * total_ * sizeof(float));
  return m;
}

}  // namespace lockstep::ddp
