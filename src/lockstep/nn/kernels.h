// Element-wise hot loops shared by the layers and optimizers. Each is compiled twice (AVX2
// and baseline x86-64) and picked at load time, so a generic build still runs at AVX2 speed
// where available. No FMA and no reassociation: both versions give bit-identical results.
#pragma once

#include <cstdint>

namespace lockstep::nn::kernels {

void relu_forward(const float* x, float* y, int64_t n);
// dx = y > 0 ? dy : 0 (y is the ReLU output)
void relu_backward(const float* y, const float* dy, float* dx, int64_t n);
// torch.optim.SGD step with momentum buffer b (dampening 0).
void sgd_momentum(float* w, const float* g, float* b, int64_t n, float lr, float mu, float wd, bool nesterov);
void sgd_plain(float* w, const float* g, int64_t n, float lr, float wd);
// torch.optim.AdamW step on n elements; step_size = lr / (1 - beta1^t), decay = 1 - lr*wd,
// bc2_sqrt = sqrt(1 - beta2^t). Works on any slice (a ZeRO shard included).
void adamw(float* w, const float* g, float* m, float* v, int64_t n, float b1, float b2, float eps, float step_size,
           float bc2_sqrt, float decay);
// dst[i] = src[i] + bias (one plane of a conv output)
void add_scalar(const float* src, float bias, float* dst, int64_t n);
// dst[i] = src[i]; returns the sum of src in index order
float copy_and_sum(const float* src, float* dst, int64_t n);
// sum of src in index order
float sum(const float* src, int64_t n);
// dst[i] += src[i]
void accumulate(const float* src, float* dst, int64_t n);

}  // namespace lockstep::nn::kernels
