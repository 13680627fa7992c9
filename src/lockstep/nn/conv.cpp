// Conv2d on oneDNN when built with it (conv_dnnl.h), else by im2col + GEMM; the pooling layers.
#include <algorithm>
#include <cstring>
#include <limits>

#include "lockstep/core/error.h"
#include "lockstep/nn/blas.h"
#include "lockstep/nn/conv_dnnl.h"
#include "lockstep/nn/kernels.h"
#include "lockstep/nn/layers.h"

namespace lockstep::nn {
namespace {

struct Geometry {
  int64_t n, c, h, w, ho, wo;
};

// `who` is only described on error: building the string every step would allocate.
Geometry geometry(const Tensor& x, int64_t c, int64_t k, int64_t stride, int64_t pad, const Module& m) {
  if (x.rank() != 4 || (c > 0 && x.dim(1) != c))
    LOCKSTEP_THROW(InvalidArgument, m.describe(), ": input ", x.shape().str(), " must be [N, ", c > 0 ? str_cat(c) : "C",
                   ", H, W]");
  Geometry g{x.dim(0), x.dim(1), x.dim(2), x.dim(3), 0, 0};
  g.ho = (g.h + 2 * pad - k) / stride + 1;
  g.wo = (g.w + 2 * pad - k) / stride + 1;
  if (g.h + 2 * pad < k || g.w + 2 * pad < k)
    LOCKSTEP_THROW(InvalidArgument, m.describe(), ": input ", x.shape().str(), " is smaller than the kernel ", k);
  return g;
}

// Valid output range [lo, hi) along one axis for kernel offset kk: lo*s - p + kk >= 0 and < size.
void valid_range(int64_t size, int64_t out, int64_t kk, int64_t s, int64_t p, int64_t& lo, int64_t& hi) {
  lo = 0;
  while (lo < out && lo * s - p + kk < 0) ++lo;
  hi = out;
  while (hi > lo && (hi - 1) * s - p + kk >= size) --hi;
}

// col[(c*K + kh)*K + kw][n*Ho*Wo + oh*Wo + ow] = x[n][c][oh*s - p + kh][ow*s - p + kw] (0 outside).
void im2col(const float* x, const Geometry& g, int64_t k, int64_t s, int64_t p, float* col) {
  const int64_t plane = g.ho * g.wo, ld = g.n * plane;
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t kh = 0; kh < k; ++kh)
      for (int64_t kw = 0; kw < k; ++kw) {
        float* row = col + ((c * k + kh) * k + kw) * ld;
        int64_t oh0, oh1, ow0, ow1;
        valid_range(g.h, g.ho, kh, s, p, oh0, oh1);
        valid_range(g.w, g.wo, kw, s, p, ow0, ow1);
        for (int64_t n = 0; n < g.n; ++n) {
          const float* src = x + (n * g.c + c) * g.h * g.w;
          float* dst = row + n * plane;
          std::fill(dst, dst + oh0 * g.wo, 0.0f);
          for (int64_t oh = oh0; oh < oh1; ++oh) {
            float* d = dst + oh * g.wo;
            const float* srow = src + (oh * s - p + kh) * g.w - p + kw;
            std::fill(d, d + ow0, 0.0f);
            if (s == 1) {
              std::memcpy(d + ow0, srow + ow0, size_t(ow1 - ow0) * sizeof(float));
            } else {
              for (int64_t ow = ow0; ow < ow1; ++ow) d[ow] = srow[ow * s];
            }
            std::fill(d + ow1, d + g.wo, 0.0f);
          }
          std::fill(dst + oh1 * g.wo, dst + plane, 0.0f);
        }
      }
}

// The adjoint of im2col: dx (zeroed by the caller) += scattered columns.
void col2im(const float* col, const Geometry& g, int64_t k, int64_t s, int64_t p, float* dx) {
  const int64_t plane = g.ho * g.wo, ld = g.n * plane;
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t kh = 0; kh < k; ++kh)
      for (int64_t kw = 0; kw < k; ++kw) {
        const float* row = col + ((c * k + kh) * k + kw) * ld;
        int64_t oh0, oh1, ow0, ow1;
        valid_range(g.h, g.ho, kh, s, p, oh0, oh1);
        valid_range(g.w, g.wo, kw, s, p, ow0, ow1);
        for (int64_t n = 0; n < g.n; ++n) {
          float* dst = dx + (n * g.c + c) * g.h * g.w;
          const float* src = row + n * plane;
          for (int64_t oh = oh0; oh < oh1; ++oh) {
            const float* sr = src + oh * g.wo;
            float* drow = dst + (oh * s - p + kh) * g.w - p + kw;
            if (s == 1) {
              kernels::accumulate(sr + ow0, drow + ow0, ow1 - ow0);
            } else {
              for (int64_t ow = ow0; ow < ow1; ++ow) drow[ow * s] += sr[ow];
            }
          }
        }
      }
}

}  // namespace

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding, bool bias)
    : c_(in_channels), oc_(out_channels), k_(kernel), stride_(stride), pad_(padding) {
  if (c_ <= 0 || oc_ <= 0 || k_ <= 0 || stride_ <= 0 || pad_ < 0)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": channels, kernel and stride must be positive, padding >= 0");
  const int64_t fan_in = c_ * k_ * k_;
  w_ = &add_parameter("weight", {oc_, c_, k_, k_}, Init::torch_default(fan_in));
  if (bias) b_ = &add_parameter("bias", {oc_}, Init::torch_default(fan_in));
}

std::string Conv2d::describe() const {
  return str_cat("Conv2d(", c_, ", ", oc_, ", k=", k_, ", stride=", stride_, ", pad=", pad_, ")");
}

// Per sample: im2col into a scratch of C*K*K x Ho*Wo floats that stays in L2, then one GEMM
// straight into the NCHW output (bias preloaded, beta = 1). Backward recomputes the columns
// per sample instead of keeping N of them: re-running im2col from cache is cheaper than
// streaming a batch-sized column matrix through memory three times.
const Tensor& Conv2d::forward(const Tensor& x) {
  const Geometry g = geometry(x, c_, k_, stride_, pad_, *this);
  const Geometry one{1, g.c, g.h, g.w, g.ho, g.wo};
  const int64_t plane = g.ho * g.wo, ckk = c_ * k_ * k_, in_sample = g.c * g.h * g.w;
  x_ = x;
  y_.resize({g.n, oc_, g.ho, g.wo});
  const float* bias = b_ ? b_->value_data() : nullptr;
  ran_dnnl_ = conv_impl() == ConvImpl::kDnnl;
  if (ran_dnnl_) {
    dnnl_conv_prepare(dnnl_, dnnl_spare_, ConvShape{g.n, g.c, g.h, g.w, oc_, k_, stride_, pad_, g.ho, g.wo, b_ != nullptr});
    dnnl_conv_forward(*dnnl_, x_.data(), w_->value_data(), bias, y_.data());
    return y_;
  }
  col_.resize({ckk, plane});
  for (int64_t n = 0; n < g.n; ++n) {
    float* yn = y_.data() + n * oc_ * plane;
    if (bias)
      for (int64_t o = 0; o < oc_; ++o) std::fill_n(yn + o * plane, plane, bias[o]);
    im2col(x.data() + n * in_sample, one, k_, stride_, pad_, col_.data());
    gemm(false, false, oc_, plane, ckk, 1.0f, w_->value_data(), ckk, col_.data(), plane, bias ? 1.0f : 0.0f, yn,
         plane);
  }
  return y_;
}

const Tensor& Conv2d::backward(const Tensor& dy) {
  const Geometry g = {x_.dim(0), x_.dim(1), x_.dim(2), x_.dim(3), y_.dim(2), y_.dim(3)};
  const Geometry one{1, g.c, g.h, g.w, g.ho, g.wo};
  const int64_t plane = g.ho * g.wo, ckk = c_ * k_ * k_, in_sample = g.c * g.h * g.w;
  LOCKSTEP_CHECK_EQ(dy.numel(), g.n * oc_ * plane, describe(), ": gradient ", dy.shape().str(),
                    " does not match output ", y_.shape().str());
  const bool want_dx = needs_input_grad();
  if (want_dx) dx_.resize(x_.shape());
  if (ran_dnnl_) {
    dnnl_conv_backward(*dnnl_, dy.data(), w_->value_data(), w_->grad_data(), b_ ? b_->grad_data() : nullptr,
                       want_dx ? dx_.data() : nullptr);
    grad_ready(*w_);
    if (b_) grad_ready(*b_);
    return dx_;
  }
  if (b_ != nullptr) {
    float* db = b_->grad_data();
    for (int64_t o = 0; o < oc_; ++o) {
      float acc = 0.0f;
      for (int64_t n = 0; n < g.n; ++n) acc += kernels::sum(dy.data() + (n * oc_ + o) * plane, plane);
      db[o] += acc;
    }
  }
  if (want_dx) {
    dx_.zero();
    tmp_.resize({ckk, plane});
  }
  col_.resize({ckk, plane});
  for (int64_t n = 0; n < g.n; ++n) {
    const float* dyn = dy.data() + n * oc_ * plane;
    im2col(x_.data() + n * in_sample, one, k_, stride_, pad_, col_.data());
    gemm(false, true, oc_, ckk, plane, 1.0f, dyn, plane, col_.data(), plane, 1.0f, w_->grad_data(), ckk);
    if (!want_dx) continue;
    gemm(true, false, ckk, plane, oc_, 1.0f, w_->value_data(), ckk, dyn, plane, 0.0f, tmp_.data(), plane);
    col2im(tmp_.data(), one, k_, stride_, pad_, dx_.data() + n * in_sample);
  }
  grad_ready(*w_);
  if (b_) grad_ready(*b_);
  return dx_;
}

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : k_(kernel), stride_(stride == 0 ? kernel : stride), pad_(padding) {
  if (k_ <= 0 || stride_ <= 0 || pad_ < 0 || 2 * pad_ > k_)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": need kernel, stride > 0 and 0 <= padding <= kernel/2");
}

std::string MaxPool2d::describe() const { return str_cat("MaxPool2d(", k_, ", stride=", stride_, ", pad=", pad_, ")"); }

namespace {
// The common 2x2/stride-2 case without bounds checks: one pass, four loads per output.
// `!(v <= best)` also picks NaN, so NaN propagates as in PyTorch.
void maxpool2x2(const float* src, int64_t h, int64_t w, int64_t ho, int64_t wo, float* dst, int32_t* arg) {
  for (int64_t oh = 0; oh < ho; ++oh) {
    const float* r0 = src + 2 * oh * w;
    const float* r1 = r0 + w;
    for (int64_t ow = 0; ow < wo; ++ow) {
      const int64_t c = 2 * ow;
      float best = r0[c];
      int32_t bi = int32_t(2 * oh * w + c);
      if (!(r0[c + 1] <= best)) best = r0[c + 1], bi = int32_t(2 * oh * w + c + 1);
      if (!(r1[c] <= best)) best = r1[c], bi = int32_t((2 * oh + 1) * w + c);
      if (!(r1[c + 1] <= best)) best = r1[c + 1], bi = int32_t((2 * oh + 1) * w + c + 1);
      dst[oh * wo + ow] = best;
      arg[oh * wo + ow] = bi;
    }
  }
  (void)h;
}

void maxpool_generic(const float* src, const Geometry& g, int64_t k, int64_t s, int64_t p, float* dst, int32_t* arg) {
  for (int64_t oh = 0; oh < g.ho; ++oh)
    for (int64_t ow = 0; ow < g.wo; ++ow) {
      float best = -std::numeric_limits<float>::infinity();
      int32_t besti = -1;
      for (int64_t kh = 0; kh < k; ++kh) {
        const int64_t ih = oh * s - p + kh;
        if (ih < 0 || ih >= g.h) continue;
        for (int64_t kw = 0; kw < k; ++kw) {
          const int64_t iw = ow * s - p + kw;
          if (iw < 0 || iw >= g.w) continue;
          const float v = src[ih * g.w + iw];
          if (besti < 0 || !(v <= best)) {
            best = v;
            besti = int32_t(ih * g.w + iw);
          }
        }
      }
      dst[oh * g.wo + ow] = best;
      arg[oh * g.wo + ow] = besti;
    }
}
}  // namespace

const Tensor& MaxPool2d::forward(const Tensor& x) {
  const Geometry g = geometry(x, 0, k_, stride_, pad_, *this);
  in_shape_ = x.shape();
  y_.resize({g.n, g.c, g.ho, g.wo});
  argmax_.resize(size_t(y_.numel()));
  const bool fast = k_ == 2 && stride_ == 2 && pad_ == 0;
  for (int64_t pl = 0; pl < g.n * g.c; ++pl) {
    const float* src = x.data() + pl * g.h * g.w;
    float* dst = y_.data() + pl * g.ho * g.wo;
    int32_t* arg = argmax_.data() + pl * g.ho * g.wo;
    if (fast) {
      maxpool2x2(src, g.h, g.w, g.ho, g.wo, dst, arg);
    } else {
      maxpool_generic(src, g, k_, stride_, pad_, dst, arg);
    }
  }
  return y_;
}

const Tensor& MaxPool2d::backward(const Tensor& dy) {
  LOCKSTEP_CHECK_EQ(dy.numel(), y_.numel(), describe(), ": gradient does not match output");
  dx_.resize(in_shape_);
  const int64_t h = in_shape_[2], w = in_shape_[3], ho = y_.dim(2), wo = y_.dim(3);
  const int64_t in_plane = h * w, out_plane = ho * wo, planes = in_shape_[0] * in_shape_[1];
  // Windows that tile the input exactly cover every dx element once: write, do not zero first.
  const bool tiles = k_ == 2 && stride_ == 2 && pad_ == 0 && h == 2 * ho && w == 2 * wo;
  if (!tiles) dx_.zero();
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* dst = dx_.data() + pl * in_plane;
    const float* src = dy.data() + pl * out_plane;
    const int32_t* arg = argmax_.data() + pl * out_plane;
    if (tiles) {
      for (int64_t oh = 0; oh < ho; ++oh)
        for (int64_t ow = 0; ow < wo; ++ow) {
          float* d = dst + 2 * oh * w + 2 * ow;
          d[0] = d[1] = d[w] = d[w + 1] = 0.0f;
          dst[arg[oh * wo + ow]] = src[oh * wo + ow];
        }
    } else {
      for (int64_t i = 0; i < out_plane; ++i) dst[arg[i]] += src[i];
    }
  }
  return dx_;
}

AvgPool2d::AvgPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : k_(kernel), stride_(stride == 0 ? kernel : stride), pad_(padding) {
  if (k_ <= 0 || stride_ <= 0 || pad_ < 0 || 2 * pad_ > k_)
    LOCKSTEP_THROW(InvalidArgument, describe(), ": need kernel, stride > 0 and 0 <= padding <= kernel/2");
}

std::string AvgPool2d::describe() const { return str_cat("AvgPool2d(", k_, ", stride=", stride_, ", pad=", pad_, ")"); }

const Tensor& AvgPool2d::forward(const Tensor& x) {
  const Geometry g = geometry(x, 0, k_, stride_, pad_, *this);
  in_shape_ = x.shape();
  y_.resize({g.n, g.c, g.ho, g.wo});
  const float inv = 1.0f / float(k_ * k_);
  for (int64_t pl = 0; pl < g.n * g.c; ++pl) {
    const float* src = x.data() + pl * g.h * g.w;
    float* dst = y_.data() + pl * g.ho * g.wo;
    for (int64_t oh = 0; oh < g.ho; ++oh)
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        float acc = 0.0f;
        for (int64_t kh = 0; kh < k_; ++kh) {
          const int64_t ih = oh * stride_ - pad_ + kh;
          if (ih < 0 || ih >= g.h) continue;
          for (int64_t kw = 0; kw < k_; ++kw) {
            const int64_t iw = ow * stride_ - pad_ + kw;
            if (iw >= 0 && iw < g.w) acc += src[ih * g.w + iw];
          }
        }
        dst[oh * g.wo + ow] = acc * inv;
      }
  }
  return y_;
}

const Tensor& AvgPool2d::backward(const Tensor& dy) {
  LOCKSTEP_CHECK_EQ(dy.numel(), y_.numel(), describe(), ": gradient does not match output");
  dx_.resize(in_shape_);
  dx_.zero();
  const int64_t h = in_shape_[2], w = in_shape_[3], ho = y_.dim(2), wo = y_.dim(3);
  const float inv = 1.0f / float(k_ * k_);
  for (int64_t pl = 0; pl < in_shape_[0] * in_shape_[1]; ++pl) {
    float* dst = dx_.data() + pl * h * w;
    const float* src = dy.data() + pl * ho * wo;
    for (int64_t oh = 0; oh < ho; ++oh)
      for (int64_t ow = 0; ow < wo; ++ow) {
        const float gv = src[oh * wo + ow] * inv;
        for (int64_t kh = 0; kh < k_; ++kh) {
          const int64_t ih = oh * stride_ - pad_ + kh;
          if (ih < 0 || ih >= h) continue;
          for (int64_t kw = 0; kw < k_; ++kw) {
            const int64_t iw = ow * stride_ - pad_ + kw;
            if (iw >= 0 && iw < w) dst[ih * w + iw] += gv;
          }
        }
      }
  }
  return dx_;
}

}  // namespace lockstep::nn
