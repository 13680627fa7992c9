// Conv2d on oneDNN (Debian's libdnnl, the library PyTorch's CPU convolutions use): the
// convolution runs in oneDNN's blocked layouts with its JIT kernels, and lockstep's NCHW
// tensors are reordered in and out. Built when oneDNN is found (LOCKSTEP_HAVE_DNNL),
// otherwise Conv2d keeps its im2col + GEMM path. ConvImpl, conv_impl() and set_conv_impl()
// are for users; the rest is used by conv.cpp only.
#pragma once

#include <cstdint>
#include <memory>

namespace lockstep::nn {

struct ConvShape {
  int64_t n, c, h, w, oc, k, stride, pad, ho, wo;
  bool bias;
  bool operator==(const ConvShape&) const = default;
};

class DnnlConv;  // oneDNN primitives and buffers for one ConvShape (conv_dnnl.cpp)
struct DnnlConvDeleter {
  void operator()(DnnlConv* p) const;
};
using DnnlConvPtr = std::unique_ptr<DnnlConv, DnnlConvDeleter>;

// Which implementation Conv2d layers run. The default comes from LOCKSTEP_CONV at first use:
// unset or "auto" is oneDNN when lockstep was built with it, else im2col; "dnnl" or "im2col"
// asks for one (any other value, or "dnnl" without oneDNN, is a ConfigError). The two agree
// to float rounding; im2col sums a batch in a fixed order independent of the thread count.
enum class ConvImpl { kDnnl, kIm2col };
bool have_dnnl_conv();  // built with oneDNN
ConvImpl conv_impl();
// Overrides LOCKSTEP_CONV for Conv2d forwards from now on (a backward follows its forward).
// kDnnl without oneDNN is a ConfigError.
void set_conv_impl(ConvImpl impl);

// set_conv_impl for a scope: restores the previous choice on exit (tests, benchmarks).
class ScopedConvImpl {
 public:
  explicit ScopedConvImpl(ConvImpl impl) : was_(conv_impl()) { set_conv_impl(impl); }
  ~ScopedConvImpl() { set_conv_impl(was_); }
  ScopedConvImpl(const ScopedConvImpl&) = delete;
  ScopedConvImpl& operator=(const ScopedConvImpl&) = delete;

 private:
  ConvImpl was_;
};

// Makes `p` fit `s` and the current num_threads() (primitives are rebuilt only when either
// changes, e.g. a last short batch; the previous ones are kept too, so alternating train and
// test batches do not rebuild every time).
void dnnl_conv_prepare(DnnlConvPtr& p, DnnlConvPtr& spare, const ConvShape& s);

// y = conv(x, w) + b (b may be null when the shape has no bias). Keeps what backward needs.
void dnnl_conv_forward(DnnlConv& p, const float* x, const float* w, const float* b, float* y);

// Adds the weight (and bias) gradient of the last forward into dw (db); writes the input
// gradient into dx unless dx is null.
void dnnl_conv_backward(DnnlConv& p, const float* dy, const float* w, float* dw, float* db,
                        float* dx);

}  // namespace lockstep::nn
