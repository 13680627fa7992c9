#include "lockstep/comm/reduce_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "lockstep/core/error.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace lockstep::comm {
namespace {

// Orders earlier non-temporal stores before later stores (they are weakly ordered on x86).
inline void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Integer sum/prod wrap around (two's complement), as in MPI and NCCL; done in unsigned
// arithmetic so that overflow is defined.
template <class T, bool = std::is_integral_v<T>>
struct Arith {
  static T add(T a, T b) { return a + b; }
  static T mul(T a, T b) { return a * b; }
};
template <class T>
struct Arith<T, true> {
  using U = std::make_unsigned_t<T>;
  static T add(T a, T b) { return T(U(a) + U(b)); }
  static T mul(T a, T b) { return T(U(a) * U(b)); }
};

template <class T, ReduceOp Op>
inline T apply(T a, T b) {
  if constexpr (Op == ReduceOp::sum || Op == ReduceOp::avg) return Arith<T>::add(a, b);
  if constexpr (Op == ReduceOp::prod) return Arith<T>::mul(a, b);
  if constexpr (Op == ReduceOp::min) return b < a ? b : a;
  if constexpr (Op == ReduceOp::max) return a < b ? b : a;
  return a;
}

template <class T, ReduceOp Op>
void fold(T* __restrict dst, const T* __restrict src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = apply<T, Op>(dst[i], src[i]);
}

template <class T, ReduceOp Op>
void fold2(T* __restrict dst, const T* __restrict a, const T* __restrict b, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = apply<T, Op>(a[i], b[i]);
}

template <class H>
float to_f(H h) {
  if constexpr (std::is_same_v<H, f16>) return f16_to_float(h);
  else return bf16_to_float(h);
}
template <class H>
H from_f(float f) {
  if constexpr (std::is_same_v<H, f16>) return float_to_f16(f);
  else return float_to_bf16(f);
}

template <class T>
void divide(void* data, size_t count, int world) {
  auto* p = static_cast<T*>(data);
  if constexpr (std::is_same_v<T, f16> || std::is_same_v<T, bf16>) {
    for (size_t i = 0; i < count; ++i) p[i] = from_f<T>(to_f(p[i]) / float(world));
  } else {
    for (size_t i = 0; i < count; ++i) p[i] = T(p[i] / T(world));
  }
}

// Whether any element is a NaN or an Inf (exponent bits all ones); integers never are.
// Branch-free over the block, so the compiler vectorises it.
template <class T>
bool any_nonfinite(const T* p, size_t n) {
  if constexpr (std::is_integral_v<T>) {
    (void)p, (void)n;
    return false;
  } else {
    using Bits = std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;
    constexpr Bits kExp = std::is_same_v<T, f16>   ? Bits(0x7c00)
                          : std::is_same_v<T, bf16> ? Bits(0x7f80)
                          : sizeof(T) == 4          ? Bits(0x7f800000u)
                                                    : Bits(0x7ff0000000000000ull);
    Bits any = 0;
    for (size_t i = 0; i < n; ++i) {
      Bits b;
      std::memcpy(&b, p + i, sizeof b);
      any |= Bits((b & kExp) == kExp);
    }
    return any != 0;
  }
}

constexpr size_t kBlockBytes = 8192;  // output block kept in L1 while sources are folded in

// Native types: dst = s0 op s1 for the first pair, then dst op= sk, one L1 block at a time.
// Writing the first pair into dst avoids a copy and keeps aliasing (dst == srcs[k]) safe
// because each element is read from every source before the block moves on.
// The many-source kernels finish each block in L1: avg divides by `world` (when > 0) and the
// block is stored to dst and, when given, to `also` (no second pass over the output).
// Non-temporal copy of whole 64-byte groups to a 16-byte aligned dst; returns bytes copied.
size_t stream_body(uint8_t* d, const uint8_t* s, size_t bytes) {
#if defined(__SSE2__)
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
    __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
    __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
  }
  return i;
#else
  (void)d, (void)s, (void)bytes;
  return 0;
#endif
}

// copy_to_shared for blocks of a larger copy: streams whatever the block's size.
void stream_copy(void* dst, const void* src, size_t bytes) {
  auto* d = static_cast<uint8_t*>(dst);
  auto* s = static_cast<const uint8_t*>(src);
  const size_t head = std::min(bytes, size_t(-reinterpret_cast<uintptr_t>(d) & 15));
  std::memcpy(d, s, head);
  const size_t body = head + stream_body(d + head, s + head, bytes - head);
  std::memcpy(d + body, s + body, bytes - body);
}

template <class T, ReduceOp Op>
void many_native(T* dst, T* also, const void* const* srcs, int nsrc, size_t count, int world, bool stream_also,
                 bool* nonfinite) {
  constexpr size_t kBlock = kBlockBytes / sizeof(T);
  const bool stream = stream_also && count * sizeof(T) >= kStreamCopyBytes;
  T tmp[kBlock];
  for (size_t lo = 0; lo < count; lo += kBlock) {
    size_t n = std::min(kBlock, count - lo);
    const T* s0 = static_cast<const T*>(srcs[0]) + lo;
    if (nsrc == 1) {
      std::memmove(tmp, s0, n * sizeof(T));
    } else {
      fold2<T, Op>(tmp, s0, static_cast<const T*>(srcs[1]) + lo, n);
      for (int k = 2; k < nsrc; ++k) fold<T, Op>(tmp, static_cast<const T*>(srcs[k]) + lo, n);
    }
    if (Op == ReduceOp::avg && world > 0) divide<T>(tmp, n, world);
    if (nonfinite && any_nonfinite(tmp, n)) *nonfinite = true;
    std::memcpy(dst + lo, tmp, n * sizeof(T));
    if (also && stream) stream_copy(also + lo, tmp, n * sizeof(T));
    else if (also) std::memcpy(also + lo, tmp, n * sizeof(T));
  }
  if (also && stream) store_fence();
}

// 16-bit floats: widen each source block to f32, accumulate in f32, round once at the end.
template <class H, ReduceOp Op>
void many_half(H* dst, H* also, const void* const* srcs, int nsrc, size_t count, int world, bool stream_also,
               bool* nonfinite) {
  constexpr size_t kBlock = kBlockBytes / sizeof(float);
  const bool stream = stream_also && count * sizeof(H) >= kStreamCopyBytes;
  float acc[kBlock];
  for (size_t lo = 0; lo < count; lo += kBlock) {
    size_t n = std::min(kBlock, count - lo);
    const H* s0 = static_cast<const H*>(srcs[0]) + lo;
    for (size_t i = 0; i < n; ++i) acc[i] = to_f(s0[i]);
    for (int k = 1; k < nsrc; ++k) {
      const H* s = static_cast<const H*>(srcs[k]) + lo;
      for (size_t i = 0; i < n; ++i) acc[i] = apply<float, Op>(acc[i], to_f(s[i]));
    }
    for (size_t i = 0; i < n; ++i) dst[lo + i] = from_f<H>(acc[i]);
    // Rounded to H first, then divided: the same bits as finish_avg after the sum.
    if (Op == ReduceOp::avg && world > 0) divide<H>(dst + lo, n, world);
    if (nonfinite && any_nonfinite(dst + lo, n)) *nonfinite = true;
    if (also && stream) stream_copy(also + lo, dst + lo, n * sizeof(H));
    else if (also) std::memcpy(also + lo, dst + lo, n * sizeof(H));
  }
  if (also && stream) store_fence();
}

template <class T, ReduceOp Op>
void into_one(void* dst, const void* src, size_t count) {
  if constexpr (std::is_same_v<T, f16> || std::is_same_v<T, bf16>) {
    auto* d = static_cast<T*>(dst);
    auto* s = static_cast<const T*>(src);
    for (size_t i = 0; i < count; ++i) d[i] = from_f<T>(apply<float, Op>(to_f(d[i]), to_f(s[i])));
  } else {
    fold<T, Op>(static_cast<T*>(dst), static_cast<const T*>(src), count);
  }
}

template <class T, ReduceOp Op>
void many_one(void* dst, void* also, const void* const* srcs, int nsrc, size_t count, int world, bool stream,
              bool* nonfinite) {
  if constexpr (std::is_same_v<T, f16> || std::is_same_v<T, bf16>)
    many_half<T, Op>(static_cast<T*>(dst), static_cast<T*>(also), srcs, nsrc, count, world, stream, nonfinite);
  else
    many_native<T, Op>(static_cast<T*>(dst), static_cast<T*>(also), srcs, nsrc, count, world, stream, nonfinite);
}

// Calls F<T, Op> for the runtime dtype and op.
template <template <class, ReduceOp> class F, class... Args>
void dispatch(DType dt, ReduceOp op, Args&&... args) {
  auto by_op = [&]<class T>() {
    switch (op) {
      case ReduceOp::sum: return F<T, ReduceOp::sum>::run(args...);
      case ReduceOp::avg: return F<T, ReduceOp::avg>::run(args...);
      case ReduceOp::min: return F<T, ReduceOp::min>::run(args...);
      case ReduceOp::max: return F<T, ReduceOp::max>::run(args...);
      case ReduceOp::prod: return F<T, ReduceOp::prod>::run(args...);
    }
  };
  switch (dt) {
    case DType::f32: return by_op.template operator()<float>();
    case DType::f64: return by_op.template operator()<double>();
    case DType::f16: return by_op.template operator()<f16>();
    case DType::bf16: return by_op.template operator()<bf16>();
    case DType::i32: return by_op.template operator()<int32_t>();
    case DType::i64: return by_op.template operator()<int64_t>();
    case DType::u8: return by_op.template operator()<uint8_t>();
  }
  LOCKSTEP_THROW(InvalidArgument, "unknown dtype ", int(dt));
}

template <class T, ReduceOp Op>
struct IntoOne {
  static void run(void* d, const void* s, size_t n) { into_one<T, Op>(d, s, n); }
};
template <class T, ReduceOp Op>
struct ManyOne {
  static void run(void* d, void* also, const void* const* s, int k, size_t n, int world, bool stream,
                  bool* nonfinite) {
    many_one<T, Op>(d, also, s, k, n, world, stream, nonfinite);
  }
};

}  // namespace

void reduce_into(void* dst, const void* src, size_t count, DType dtype, ReduceOp op) {
  if (count == 0) return;
  dispatch<IntoOne>(dtype, op, dst, src, count);
}

void reduce_many(void* dst, const void* const* srcs, int nsrc, size_t count, DType dtype,
                 ReduceOp op) {
  LOCKSTEP_CHECK(nsrc >= 1, "reduce_many needs a source");
  if (count == 0) return;
  dispatch<ManyOne>(dtype, op, dst, static_cast<void*>(nullptr), srcs, nsrc, count, 0, false,
                    static_cast<bool*>(nullptr));
}

void reduce_many_finish(void* dst, void* also, const void* const* srcs, int nsrc, size_t count,
                        DType dtype, ReduceOp op, int world, bool stream_also, bool* nonfinite) {
  LOCKSTEP_CHECK(nsrc >= 1 && world >= 1, "reduce_many_finish needs a source and a world size");
  if (count == 0) return;
  dispatch<ManyOne>(dtype, op, dst, also, srcs, nsrc, count, world, stream_also, nonfinite);
}

bool has_nonfinite(const void* data, size_t count, DType dtype) {
  switch (dtype) {
    case DType::f32: return any_nonfinite(static_cast<const float*>(data), count);
    case DType::f64: return any_nonfinite(static_cast<const double*>(data), count);
    case DType::f16: return any_nonfinite(static_cast<const f16*>(data), count);
    case DType::bf16: return any_nonfinite(static_cast<const bf16*>(data), count);
    case DType::i32:
    case DType::i64:
    case DType::u8: return false;
  }
  return false;
}

void copy_to_shared(void* dst, const void* src, size_t bytes, bool stream) {
  if (bytes == 0) return;
  if (!stream || bytes < kStreamCopyBytes) return void(std::memcpy(dst, src, bytes));
  stream_copy(dst, src, bytes);
  store_fence();
}

void finish_avg(void* data, size_t count, DType dtype, ReduceOp op, int world) {
  if (op != ReduceOp::avg || count == 0) return;
  switch (dtype) {
    case DType::f32: return divide<float>(data, count, world);
    case DType::f64: return divide<double>(data, count, world);
    case DType::f16: return divide<f16>(data, count, world);
    case DType::bf16: return divide<bf16>(data, count, world);
    case DType::i32: return divide<int32_t>(data, count, world);
    case DType::i64: return divide<int64_t>(data, count, world);
    case DType::u8: return divide<uint8_t>(data, count, world);
  }
}

void widen_to_f32(const void* src, float* dst, size_t count, DType dtype) {
  if (dtype == DType::f16) {
    auto* s = static_cast<const f16*>(src);
    for (size_t i = 0; i < count; ++i) dst[i] = f16_to_float(s[i]);
  } else {
    LOCKSTEP_CHECK(dtype == DType::bf16, "widen_to_f32 on ", dtype_name(dtype));
    auto* s = static_cast<const bf16*>(src);
    for (size_t i = 0; i < count; ++i) dst[i] = bf16_to_float(s[i]);
  }
}

void narrow_from_f32(const float* src, void* dst, size_t count, DType dtype) {
  if (dtype == DType::f16) {
    auto* d = static_cast<f16*>(dst);
    for (size_t i = 0; i < count; ++i) d[i] = float_to_f16(src[i]);
  } else {
    LOCKSTEP_CHECK(dtype == DType::bf16, "narrow_from_f32 on ", dtype_name(dtype));
    auto* d = static_cast<bf16*>(dst);
    for (size_t i = 0; i < count; ++i) d[i] = float_to_bf16(src[i]);
  }
}

}  // namespace lockstep::comm
