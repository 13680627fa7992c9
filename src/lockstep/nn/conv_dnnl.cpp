#include "lockstep/nn/conv_dnnl.h"

#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lockstep/core/error.h"
#include "lockstep/nn/blas.h"
#include "lockstep/nn/kernels.h"

#ifdef LOCKSTEP_HAVE_DNNL
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace lockstep::nn {

bool have_dnnl_conv() {
#ifdef LOCKSTEP_HAVE_DNNL
  return true;
#else
  return false;
#endif
}

namespace {

void require_dnnl(const char* what) {
  if (!have_dnnl_conv())
    LOCKSTEP_THROW(ConfigError, what,
                   ": this lockstep was built without oneDNN (install libdnnl-dev and rebuild, ",
                   "or use the im2col convolution)");
}

std::atomic<int> g_impl{-1};  // a ConvImpl once known

ConvImpl impl_from_env() {
  const char* v = std::getenv("LOCKSTEP_CONV");
  const std::string s = v ? v : "";
  if (s == "im2col") return ConvImpl::kIm2col;
  if (s == "dnnl") {
    require_dnnl("LOCKSTEP_CONV=dnnl");
    return ConvImpl::kDnnl;
  }
  if (s != "" && s != "auto")
    LOCKSTEP_THROW(ConfigError, "LOCKSTEP_CONV='", s,
                   "': expected auto, dnnl or im2col (auto, or unset: oneDNN ",
                   "when lockstep was built with it, else im2col)");
  return have_dnnl_conv() ? ConvImpl::kDnnl : ConvImpl::kIm2col;
}

}  // namespace

ConvImpl conv_impl() {
  int v = g_impl.load(std::memory_order_relaxed);
  if (v < 0) {
    v = int(impl_from_env());
    int expected = -1;
    if (!g_impl.compare_exchange_strong(expected, v)) v = expected;  // set meanwhile
  }
  return ConvImpl(v);
}

void set_conv_impl(ConvImpl impl) {
  if (impl == ConvImpl::kDnnl) require_dnnl("set_conv_impl(ConvImpl::kDnnl)");
  g_impl.store(int(impl), std::memory_order_relaxed);
}

#ifdef LOCKSTEP_HAVE_DNNL

namespace {

using dnnl::memory;
using Tag = memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// One tensor as lockstep holds it (`user`, NCHW/OIHW, pointer set per call) and as a
// primitive wants it (`inner`); a cached reorder runs between them when the layouts differ.
struct Port {
  memory user, inner;
  std::optional<dnnl::reorder> to_inner, to_user;

  Port() = default;
  Port(const memory::desc& user_md, const memory::desc& inner_md) {
    user = memory(user_md, cpu_engine(), DNNL_MEMORY_NONE);
    if (user_md == inner_md) {
      inner = user;
    } else {
      inner = memory(inner_md, cpu_engine());
      to_inner.emplace(user, inner);
      to_user.emplace(inner, user);
    }
  }
  // An input: makes `inner` the primitive's view of `data`.
  void in(dnnl::stream& s, const float* data) {
    user.set_data_handle(const_cast<float*>(data));
    if (to_inner) to_inner->execute(s, user, inner);
  }
  // An output: the primitive writes `inner`; then finish() stores it into `data`.
  void out(float* data) { user.set_data_handle(data); }
  void finish(dnnl::stream& s) {
    if (to_user) to_user->execute(s, inner, user);
  }
};

memory::desc md(memory::dims dims, Tag tag) {
  return memory::desc(std::move(dims), memory::data_type::f32, tag);
}

}  // namespace

class DnnlConv {
 public:
  // oneDNN plans a primitive's work split (and so its summation order) for the OpenMP thread
  // count at creation: created with the count it will run with, for determinism.
  DnnlConv(const ConvShape& s, int nthreads) : shape(s), threads(nthreads), strm(cpu_engine()) {
    using namespace dnnl;
    omp_set_num_threads(threads);
    const memory::dims src{s.n, s.c, s.h, s.w}, wei{s.oc, s.c, s.k, s.k},
        dst{s.n, s.oc, s.ho, s.wo};
    const memory::dims stride{s.stride, s.stride}, pad{s.pad, s.pad};
    const auto src_any = md(src, Tag::any), wei_any = md(wei, Tag::any),
               dst_any = md(dst, Tag::any);
    const auto bias_md = md({s.oc}, Tag::x);
    const auto fd =
        s.bias
            ? convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                        src_any, wei_any, bias_md, dst_any, stride, pad, pad)
            : convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                        src_any, wei_any, dst_any, stride, pad, pad);
    fpd = convolution_forward::primitive_desc(fd, cpu_engine());
    const auto bdd = convolution_backward_data::desc(algorithm::convolution_direct, src_any,
                                                     wei_any, dst_any, stride, pad, pad);
    bdpd = convolution_backward_data::primitive_desc(bdd, cpu_engine(), fpd);
    const auto bwd =
        s.bias ? convolution_backward_weights::desc(algorithm::convolution_direct, src_any, wei_any,
                                                    bias_md, dst_any, stride, pad, pad)
               : convolution_backward_weights::desc(algorithm::convolution_direct, src_any, wei_any,
                                                    dst_any, stride, pad, pad);
    bwpd = convolution_backward_weights::primitive_desc(bwd, cpu_engine(), fpd);
    fwd = convolution_forward(fpd);
    bwd_data = convolution_backward_data(bdpd);
    bwd_weights = convolution_backward_weights(bwpd);

    const auto src_u = md(src, Tag::nchw), wei_u = md(wei, Tag::oihw), dst_u = md(dst, Tag::nchw);
    f_src = Port(src_u, fpd.src_desc());
    f_wei = Port(wei_u, fpd.weights_desc());
    f_dst = Port(dst_u, fpd.dst_desc());
    if (s.bias) f_bias = Port(bias_md, fpd.bias_desc());
    w_src = Port(src_u, bwpd.src_desc());
    w_ddst = Port(dst_u, bwpd.diff_dst_desc());
    w_dwei = Port(wei_u, bwpd.diff_weights_desc());
    dw_sum.resize(size_t(s.oc * s.c * s.k * s.k));
    if (s.bias) {
      w_dbias = Port(bias_md, bwpd.diff_bias_desc());
      db_sum.resize(size_t(s.oc));
    }
    d_ddst = Port(dst_u, bdpd.diff_dst_desc());
    d_wei = Port(wei_u, bdpd.weights_desc());
    d_dsrc = Port(src_u, bdpd.diff_src_desc());

    // The argument maps are built once (execute() then only reads them; the ports' memory
    // objects stay, only their data pointers change), where an input already sits in the
    // layout a later primitive wants, that primitive reads it without another reorder.
    w_reuses_fwd_src = bwpd.src_desc() == fpd.src_desc();
    d_reuses_w_ddst = bdpd.diff_dst_desc() == bwpd.diff_dst_desc();
    d_reuses_fwd_wei = bdpd.weights_desc() == fpd.weights_desc();
    fwd_args = {
        {DNNL_ARG_SRC, f_src.inner}, {DNNL_ARG_WEIGHTS, f_wei.inner}, {DNNL_ARG_DST, f_dst.inner}};
    if (s.bias) fwd_args.emplace(DNNL_ARG_BIAS, f_bias.inner);
    bwd_weights_args = {{DNNL_ARG_SRC, w_reuses_fwd_src ? f_src.inner : w_src.inner},
                        {DNNL_ARG_DIFF_DST, w_ddst.inner},
                        {DNNL_ARG_DIFF_WEIGHTS, w_dwei.inner}};
    if (s.bias) bwd_weights_args.emplace(DNNL_ARG_DIFF_BIAS, w_dbias.inner);
    bwd_data_args = {{DNNL_ARG_DIFF_DST, d_reuses_w_ddst ? w_ddst.inner : d_ddst.inner},
                     {DNNL_ARG_WEIGHTS, d_reuses_fwd_wei ? f_wei.inner : d_wei.inner},
                     {DNNL_ARG_DIFF_SRC, d_dsrc.inner}};
  }

  void forward(const float* x, const float* w, const float* b, float* y) {
    omp_set_num_threads(threads);  // per calling thread (OpenMP's setting is per thread)
    x_ = x;
    f_src.in(strm, x);
    f_wei.in(strm, w);
    if (shape.bias) f_bias.in(strm, b);
    f_dst.out(y);
    fwd.execute(strm, fwd_args);
    f_dst.finish(strm);
    strm.wait();
  }

  // `w` must be the weights the forward saw (no step in between): when the backward-data
  // primitive wants the forward's weight layout it reads the forward's reordered copy.
  void backward(const float* dy, const float* w, float* dw, float* db, float* dx) {
    omp_set_num_threads(threads);
    LOCKSTEP_CHECK(x_ != nullptr, "Conv2d (oneDNN): backward before forward");
    if (!w_reuses_fwd_src) w_src.in(strm, x_);
    w_ddst.in(strm, dy);
    w_dwei.out(dw_sum.data());
    if (shape.bias) w_dbias.out(db_sum.data());
    bwd_weights.execute(strm, bwd_weights_args);
    w_dwei.finish(strm);
    if (shape.bias) w_dbias.finish(strm);
    if (dx != nullptr) {
      if (!d_reuses_w_ddst) d_ddst.in(strm, dy);
      if (!d_reuses_fwd_wei) d_wei.in(strm, w);
      d_dsrc.out(dx);
      bwd_data.execute(strm, bwd_data_args);
      d_dsrc.finish(strm);
    }
    strm.wait();
    // oneDNN overwrites its outputs; lockstep's gradients accumulate (no_sync, micro-batches).
    kernels::accumulate(dw_sum.data(), dw, int64_t(dw_sum.size()));
    if (shape.bias) kernels::accumulate(db_sum.data(), db, int64_t(db_sum.size()));
  }

  const ConvShape shape;
  const int threads;

 private:
  dnnl::stream strm;
  dnnl::convolution_forward::primitive_desc fpd;
  dnnl::convolution_backward_data::primitive_desc bdpd;
  dnnl::convolution_backward_weights::primitive_desc bwpd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
  Port f_src, f_wei, f_dst, f_bias, w_src, w_ddst, w_dwei, w_dbias, d_ddst, d_wei, d_dsrc;
  std::unordered_map<int, memory> fwd_args, bwd_weights_args, bwd_data_args;
  bool w_reuses_fwd_src = false, d_reuses_w_ddst = false, d_reuses_fwd_wei = false;
  std::vector<float> dw_sum, db_sum;
  const float* x_ = nullptr;  // the last forward's input
};

void DnnlConvDeleter::operator()(DnnlConv* p) const {
  delete p;
}

void dnnl_conv_prepare(DnnlConvPtr& p, DnnlConvPtr& spare, const ConvShape& s) {
  const int threads = num_threads();
  auto fits = [&](const DnnlConvPtr& c) { return c && c->shape == s && c->threads == threads; };
  if (fits(p)) return;
  if (fits(spare)) return std::swap(p, spare);
  try {
    DnnlConvPtr fresh(new DnnlConv(s, threads));
    spare = std::move(p);
    p = std::move(fresh);
  } catch (const dnnl::error& e) {
    LOCKSTEP_THROW(InvalidArgument, "Conv2d: oneDNN could not set up the convolution (input [", s.n,
                   ", ", s.c, ", ", s.h, ", ", s.w, "], ", s.oc, " filters ", s.k, "x", s.k,
                   ", stride ", s.stride, ", pad ", s.pad, "): ", e.what(),
                   "; set LOCKSTEP_CONV=im2col to use lockstep's own convolution");
  }
}

void dnnl_conv_forward(DnnlConv& p, const float* x, const float* w, const float* b, float* y) {
  p.forward(x, w, b, y);
}

void dnnl_conv_backward(DnnlConv& p, const float* dy, const float* w, float* dw, float* db,
                        float* dx) {
  p.backward(dy, w, dw, db, dx);
}

#else  // no oneDNN: conv_impl() is never kDnnl, so Conv2d never calls these

class DnnlConv {};
void DnnlConvDeleter::operator()(DnnlConv* p) const {
  delete p;
}
void dnnl_conv_prepare(DnnlConvPtr&, DnnlConvPtr&, const ConvShape&) {
  LOCKSTEP_THROW(InvalidArgument, "Conv2d: built without oneDNN");
}
void dnnl_conv_forward(DnnlConv&, const float*, const float*, const float*, float*) {
  LOCKSTEP_THROW(InvalidArgument, "Conv2d: built without oneDNN");
}
void dnnl_conv_backward(DnnlConv&, const float*, const float*, float*, float*, float*) {
  LOCKSTEP_THROW(InvalidArgument, "Conv2d: built without oneDNN");
}

#endif

}  // namespace lockstep::nn
