#include "lockstep/nn/kernels.h"

#include <cmath>

// An AVX2 and a baseline copy of each kernel, picked at load time by an ifunc resolver. Not
// under ThreadSanitizer: its instrumented resolver runs before the TSan runtime is up.
#if defined(__SANITIZE_THREAD__)
#define LOCKSTEP_NN_CLONES
#else
#define LOCKSTEP_NN_CLONES __attribute__((target_clones("avx2", "default")))
#endif

namespace lockstep::nn::kernels {

LOCKSTEP_NN_CLONES void relu_forward(const float* __restrict x, float* __restrict y, int64_t n) {
  // !(x <= 0) keeps NaN (as torch.relu does), so a NaN guard downstream still sees it.
  for (int64_t i = 0; i < n; ++i) y[i] = !(x[i] <= 0.0f) ? x[i] : 0.0f;
}

LOCKSTEP_NN_CLONES void relu_backward(const float* __restrict y, const float* __restrict dy, float* __restrict dx,
                                      int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

LOCKSTEP_NN_CLONES void sgd_momentum(float* __restrict w, const float* __restrict g, float* __restrict b, int64_t n,
                                     float lr, float mu, float wd, bool nesterov) {
  if (nesterov) {
    for (int64_t i = 0; i < n; ++i) {
      const float d = g[i] + wd * w[i];
      b[i] = mu * b[i] + d;
      w[i] -= lr * (d + mu * b[i]);
    }
  } else if (wd == 0.0f) {
    // The decay term dropped: one stream fewer. Equal to the general loop with wd = 0 except
    // for non-finite weights and the sign of a zero gradient.
    for (int64_t i = 0; i < n; ++i) {
      b[i] = mu * b[i] + g[i];
      w[i] -= lr * b[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      b[i] = mu * b[i] + (g[i] + wd * w[i]);
      w[i] -= lr * b[i];
    }
  }
}

LOCKSTEP_NN_CLONES void sgd_plain(float* __restrict w, const float* __restrict g, int64_t n, float lr, float wd) {
  for (int64_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
}

LOCKSTEP_NN_CLONES void adamw(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v,
                              int64_t n, float b1, float b2, float eps, float step_size, float bc2_sqrt, float decay) {
  for (int64_t i = 0; i < n; ++i) {
    w[i] *= decay;
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    w[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

LOCKSTEP_NN_CLONES void add_scalar(const float* __restrict src, float bias, float* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i] + bias;
}

LOCKSTEP_NN_CLONES float copy_and_sum(const float* __restrict src, float* __restrict dst, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = src[i];
    acc += src[i];
  }
  return acc;
}

LOCKSTEP_NN_CLONES float sum(const float* __restrict src, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += src[i];
  return acc;
}

LOCKSTEP_NN_CLONES void accumulate(const float* __restrict src, float* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace lockstep::nn::kernels
