// Element-wise reduction kernels used by every algorithm: dst = dst op src over `count`
// elements of a dtype, a many-source variant (shared memory reads all peers at once), and the
// final division of avg. Inner loops are plain typed loops the compiler vectorises.
#pragma once

#include <cstddef>

#include "lockstep/comm/types.h"
#include "lockstep/core/dtype.h"

namespace lockstep::comm {

// dst[i] = dst[i] op src[i]. avg accumulates like sum (call finish_avg at the end).
// f16/bf16 round after each step; algorithms that chain many steps reduce in f32 instead.
void reduce_into(void* dst, const void* src, size_t count, DType dtype, ReduceOp op);

// dst[i] = op over k of srcs[k][i], accumulated in f32 for f16/bf16. dst may alias srcs[k].
// Cache-blocked: a block of the output stays in L1 while every source is folded in.
void reduce_many(void* dst, const void* const* srcs, int nsrc, size_t count, DType dtype,
                 ReduceOp op);

// reduce_many, then finish_avg (op avg: divide by world), and the result stored to dst and,
// unless null, also to `also` (with copy_to_shared's stores and `stream_also` as its
// `stream`: `also` is memory another core reads next) — all in one pass, each block finished
// while in L1. The bits equal those of reduce_many + finish_avg + memcpy. With `nonfinite`,
// sets *nonfinite when the result holds a NaN or an Inf (checked in the same pass; never
// cleared, so one flag can gather several calls).
void reduce_many_finish(void* dst, void* also, const void* const* srcs, int nsrc, size_t count,
                        DType dtype, ReduceOp op, int world, bool stream_also = true,
                        bool* nonfinite = nullptr);

// Whether any element is a NaN or an Inf (integer dtypes: never).
bool has_nonfinite(const void* data, size_t count, DType dtype);

// memcpy into memory that another core reads next (a shared-memory staging slot). With
// `stream`, from kStreamCopyBytes on, non-temporal stores: when the slot's lines are still
// cached by the peer that read them last round, ordinary stores pay one read-for-ownership
// per line across cores (1 MiB: 7.5 GB/s against 38 GB/s streamed, on this project's AMD
// EPYC VM at one time) — but when the two cores share a cache, the data the reader wants is
// then no longer in it (the same VM another time: all-reduce 2x faster with ordinary stores).
// The shared-memory group measures which is faster (shm/stream_tuner.h). Smaller copies use
// memcpy. Ends with a store fence, so a release store that follows publishes the data.
inline constexpr size_t kStreamCopyBytes = 32 << 10;
void copy_to_shared(void* dst, const void* src, size_t bytes, bool stream = true);

// data[i] /= world (integer division for integer dtypes); no-op unless op is avg.
void finish_avg(void* data, size_t count, DType dtype, ReduceOp op, int world);

// Converts between a 16-bit float buffer and f32 (for algorithms that accumulate in f32).
void widen_to_f32(const void* src, float* dst, size_t count, DType dtype);
void narrow_from_f32(const float* src, void* dst, size_t count, DType dtype);

inline bool is_half(DType t) { return t == DType::f16 || t == DType::bf16; }

}  // namespace lockstep::comm
