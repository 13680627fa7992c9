#include "lockstep/ddp/powersgd_hook.h"

#include <cmath>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/nn/blas.h"

namespace lockstep::ddp {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// M viewed as [shape[0], rest]; vectors and scalars are never compressed.
bool matrix_shape(const TensorInfo& info, size_t& n, size_t& m) {
  if (info.shape.size() < 2) return false;
  n = size_t(info.shape[0]);
  m = info.numel() / (n ? n : 1);
  return n > 1 && m > 1;
}

}  // namespace

void orthonormalize_columns(float* p, size_t n, size_t r) {
  for (size_t j = 0; j < r; ++j) {
    for (size_t k = 0; k < j; ++k) {
      double dot = 0;
      for (size_t i = 0; i < n; ++i) dot += double(p[i * r + j]) * p[i * r + k];
      for (size_t i = 0; i < n; ++i) p[i * r + j] -= float(dot) * p[i * r + k];
    }
    double norm = 0;
    for (size_t i = 0; i < n; ++i) norm += double(p[i * r + j]) * p[i * r + j];
    const float inv = float(1.0 / (std::sqrt(norm) + 1e-8));
    for (size_t i = 0; i < n; ++i) p[i * r + j] *= inv;
  }
}

PowerSgdHook::PowerSgdHook(PowerSgdOptions opt) : opt_(opt) {
  if (opt.rank < 1) LOCKSTEP_THROW(ConfigError, "PowerSGD: rank must be >= 1, got ", opt.rank);
}

void PowerSgdHook::init_q(Matrix& mat, size_t param) {
  uint64_t s = opt_.seed ^ (uint64_t(param) * 0x9e3779b97f4a7c15ull);
  for (float& v : mat.q) v = float(double(splitmix64(s) >> 40) * 0x1p-24 * 2.0 - 1.0);
}

PowerSgdHook::Matrix& PowerSgdHook::matrix(size_t param, size_t n, size_t m) {
  if (matrices_.size() <= param) matrices_.resize(param + 1);
  auto& slot = matrices_[param];
  if (!slot) {
    slot = std::make_unique<Matrix>();
    slot->n = n;
    slot->m = m;
    slot->q.assign(m * size_t(opt_.rank), 0.0f);
    slot->error.assign(n * m, 0.0f);
    init_q(*slot, param);
  }
  return *slot;
}

size_t PowerSgdHook::wire_floats() const {
  size_t n = 0;
  for (const Plan& p : plans_) n += p.plain_floats + p.p_floats + p.q_floats;
  return n;
}

size_t PowerSgdHook::plain_floats() const {
  size_t n = 0;
  for (const Plan& p : plans_) n += p.bucket_floats;
  return n;
}

void PowerSgdHook::reset_state() {
  for (size_t i = 0; i < matrices_.size(); ++i)
    if (matrices_[i]) {
      std::fill(matrices_[i]->error.begin(), matrices_[i]->error.end(), 0.0f);
      init_q(*matrices_[i], i);
    }
}

PowerSgdHook::Plan& PowerSgdHook::plan_for(const GradBucket& bucket) {
  while (plans_.size() <= bucket.index) plans_.emplace_back();
  Plan& plan = plans_[bucket.index];
  if (plan.params.size() == bucket.params.size() &&
      std::equal(plan.params.begin(), plan.params.end(), bucket.params.begin()))
    return plan;
  plan = Plan{};
  plan.params.assign(bucket.params.begin(), bucket.params.end());
  const size_t r = size_t(opt_.rank);
  for (size_t k = 0; k < bucket.params.size(); ++k) {
    const TensorInfo& info = bucket.source->param_info(bucket.params[k]);
    size_t n = 0, m = 0;
    if (matrix_shape(info, n, m) && float(n * m) >= opt_.min_compression * float((n + m) * r)) {
      plan.compressed.push_back(k);
      plan.p_floats += n * r;
      plan.q_floats += m * r;
    } else {
      plan.plain.push_back(k);
      plan.plain_floats += info.numel();
    }
  }
  plan.first = AlignedBuffer((plan.plain_floats + plan.p_floats + 1) * sizeof(float));
  plan.second = AlignedBuffer((plan.q_floats + 1) * sizeof(float));
  plan.bucket_floats = bucket.data.size();
  return plan;
}

Pending PowerSgdHook::launch(GradBucket& bucket, comm::ProcessGroup& pg) {
  if (bucket.iteration < opt_.start_iter || bucket.dtype != DType::f32)
    return average_in_own_dtype(bucket, pg);
  Plan& plan = plan_for(bucket);
  const size_t r = size_t(opt_.rank);
  float* out = plan.first.as<float>().data();
  for (size_t k : plan.plain) {  // vectors go as they are
    const size_t n = bucket.source->param_info(bucket.params[k]).numel();
    std::memcpy(out, bucket.data.data() + bucket.offsets[k], n * sizeof(float));
    out += n;
  }
  for (size_t k : plan.compressed) {  // M = grad + error; P = M Q
    size_t n = 0, m = 0;
    matrix_shape(bucket.source->param_info(bucket.params[k]), n, m);
    Matrix& mat = matrix(bucket.params[k], n, m);
    if (!opt_.warm_start) init_q(mat, bucket.params[k]);
    const float* g = bucket.data.data() + bucket.offsets[k];
    for (size_t i = 0; i < n * m; ++i) mat.error[i] += g[i];
    nn::gemm(false, false, int64_t(n), int64_t(r), int64_t(m), 1.0f, mat.error.data(), int64_t(m), mat.q.data(),
             int64_t(r), 0.0f, out, int64_t(r));
    out += n * r;
  }
  comm::Work w = pg.allreduce(plan.first.data(), plan.plain_floats + plan.p_floats, DType::f32, comm::ReduceOp::avg);
  GradBucket b = bucket;
  return {std::move(w), [this, b, &plan, &pg](Millis timeout) { finish(b, plan, pg, timeout); }, nullptr};
}

void PowerSgdHook::finish(GradBucket bucket, Plan& plan, comm::ProcessGroup& pg, Millis timeout) {
  const size_t r = size_t(opt_.rank);
  const float* in = plan.first.as<float>().data();
  for (size_t k : plan.plain) {
    const size_t n = bucket.source->param_info(bucket.params[k]).numel();
    std::memcpy(bucket.data.data() + bucket.offsets[k], in, n * sizeof(float));
    in += n;
  }
  // Orthonormalise each averaged P, then Q = M^T P into the second buffer.
  float* p = plan.first.as<float>().data() + plan.plain_floats;
  float* q = plan.second.as<float>().data();
  for (size_t k : plan.compressed) {
    Matrix& mat = *matrices_[bucket.params[k]];
    orthonormalize_columns(p, mat.n, r);
    nn::gemm(true, false, int64_t(mat.m), int64_t(r), int64_t(mat.n), 1.0f, mat.error.data(), int64_t(mat.m), p,
             int64_t(r), 0.0f, q, int64_t(r));
    p += mat.n * r;
    q += mat.m * r;
  }
  pg.allreduce(plan.second.data(), plan.q_floats, DType::f32, comm::ReduceOp::avg).wait(timeout);
  // grad = P Q^T; error = M - grad; keep Q for the next step.
  p = plan.first.as<float>().data() + plan.plain_floats;
  q = plan.second.as<float>().data();
  for (size_t k : plan.compressed) {
    Matrix& mat = *matrices_[bucket.params[k]];
    float* g = bucket.data.data() + bucket.offsets[k];
    nn::gemm(false, true, int64_t(mat.n), int64_t(mat.m), int64_t(r), 1.0f, p, int64_t(r), q, int64_t(r), 0.0f, g,
             int64_t(mat.m));
    for (size_t i = 0; i < mat.n * mat.m; ++i) mat.error[i] -= g[i];
    std::memcpy(mat.q.data(), q, mat.m * r * sizeof(float));
    p += mat.n * r;
    q += mat.m * r;
  }
}

}  // namespace lockstep::ddp
