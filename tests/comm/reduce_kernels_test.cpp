// The reduction kernels: reduce_many_finish (fold, avg division and a second store in one
// pass) must give exactly the bits of reduce_many + finish_avg + memcpy, for every dtype and
// op, any number of sources, unaligned starts and sizes that end mid-block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <cstring>
#include <vector>

#include "comm_test_util.h"
#include "lockstep/comm/reduce_kernels.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

using testing::make_input;

TEST(ReduceKernels, ManyFinishEqualsManyThenAvgThenCopyBitwise) {
  for (DType dt : kAllDTypes)
    for (ReduceOp op : kAllReduceOps)
      for (int nsrc : {1, 2, 3, 8})
        for (size_t count : {size_t(1), size_t(13), size_t(2049), size_t(5000), size_t(20011)}) {
          const size_t es = dtype_size(dt);
          std::vector<std::vector<uint8_t>> in;
          std::vector<const void*> srcs;
          for (int r = 0; r < nsrc; ++r) in.push_back(make_input(r, count, dt, op, 1));
          for (auto& b : in) srcs.push_back(b.data() + es);  // unaligned by one element
          // Outputs start one element in, like the inputs (aligned for the element, not more).
          std::vector<uint8_t> want((count + 1) * es), got((count + 1) * es), also((count + 1) * es);
          reduce_many(want.data() + es, srcs.data(), nsrc, count, dt, op);
          finish_avg(want.data() + es, count, dt, op, nsrc);
          const std::string what = str_cat(dtype_name(dt), " ", reduce_op_name(op), " nsrc=", nsrc,
                                           " n=", count);
          for (bool stream : {true, false}) {  // `also` with non-temporal or ordinary stores
            reduce_many_finish(got.data() + es, also.data() + es, srcs.data(), nsrc, count, dt, op, nsrc, stream);
            ASSERT_EQ(0, std::memcmp(want.data() + es, got.data() + es, count * es)) << what;
            ASSERT_EQ(0, std::memcmp(want.data() + es, also.data() + es, count * es)) << what << " stream=" << stream;
            std::fill(got.begin(), got.end(), 0);
            std::fill(also.begin(), also.end(), 0);
          }
          // dst may alias a source (the shared-memory paths fold into the caller's buffer).
          std::vector<uint8_t> self = in[0];
          srcs[0] = self.data() + es;
          reduce_many_finish(self.data() + es, nullptr, srcs.data(), nsrc, count, dt, op, nsrc);
          ASSERT_EQ(0, std::memcmp(want.data() + es, self.data() + es, count * es)) << what << " aliased";
        }
}

// copy_to_shared streams large copies (non-temporal stores after an aligning head, memcpy for
// the tail) when asked: every size and misalignment gives memcpy's bytes and touches nothing
// around dst (even sizes streamed, odd ones not).
// The NaN/Inf flag of reduce_many_finish (DDP's guard, checked in the same pass): set for a
// NaN or an Inf in any source at any position (first element, a block edge, the last), for
// a sum that overflows to Inf, never for finite results or integers; never cleared.
TEST(ReduceKernels, ManyFinishFlagsNaNAndInfInTheSamePass) {
  for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32})
    for (size_t count : {size_t(1), size_t(2049), size_t(20011)})
      for (size_t bad : {size_t(0), size_t(2047), count - 1}) {
        if (bad >= count) continue;
        for (double poison : {std::nan(""), double(INFINITY), -double(INFINITY)}) {
          std::vector<std::vector<uint8_t>> in;
          for (int r = 0; r < 3; ++r) in.push_back(make_input(r, count, dt, ReduceOp::avg));
          store_from_double(in[1].data(), dt, bad, poison);
          const void* srcs[3] = {in[0].data(), in[1].data(), in[2].data()};
          std::vector<uint8_t> out(count * dtype_size(dt) + 1);
          bool flag = false;
          reduce_many_finish(out.data(), nullptr, srcs, 3, count, dt, ReduceOp::avg, 3, false, &flag);
          const bool is_int = dt == DType::i32;
          EXPECT_EQ(flag, !is_int) << dtype_name(dt) << " n=" << count << " at " << bad << " " << poison;
          EXPECT_EQ(has_nonfinite(out.data(), count, dt), !is_int) << dtype_name(dt);
          bool clean = false;
          store_from_double(in[1].data(), dt, bad, 1.0);
          reduce_many_finish(out.data(), nullptr, srcs, 3, count, dt, ReduceOp::avg, 3, false, &clean);
          EXPECT_FALSE(clean) << dtype_name(dt) << " n=" << count;
          EXPECT_FALSE(has_nonfinite(out.data(), count, dt)) << dtype_name(dt);
          bool kept = true;  // an earlier call's answer stays
          reduce_many_finish(out.data(), nullptr, srcs, 3, count, dt, ReduceOp::avg, 3, false, &kept);
          EXPECT_TRUE(kept);
        }
      }
  // Finite inputs whose sum overflows: the result is Inf, and flagged.
  std::vector<float> a(100, 3e38f), b(100, 3e38f), out(100);
  const void* srcs[2] = {a.data(), b.data()};
  bool flag = false;
  reduce_many_finish(out.data(), nullptr, srcs, 2, a.size(), DType::f32, ReduceOp::sum, 2, false, &flag);
  EXPECT_TRUE(flag);
}

TEST(ReduceKernels, CopyToSharedEqualsMemcpyAndStaysInBounds) {
  constexpr size_t kGuard = 64;
  for (size_t bytes : {size_t(0), size_t(1), size_t(63), kStreamCopyBytes - 1, kStreamCopyBytes,
                       kStreamCopyBytes + 17, kStreamCopyBytes + 18, size_t(100003), size_t(100004)})
    for (size_t dst_off : {0, 1, 8, 15, 16, 33})
      for (size_t src_off : {0, 3, 16}) {
        std::vector<uint8_t> src(bytes + src_off + 1), dst(bytes + dst_off + 2 * kGuard, 0xA5);
        for (size_t i = 0; i < src.size(); ++i) src[i] = uint8_t(i * 131 + 7);
        copy_to_shared(dst.data() + kGuard + dst_off, src.data() + src_off, bytes, /*stream=*/(bytes & 1) == 0);
        const std::string what = str_cat("bytes=", bytes, " dst+", dst_off, " src+", src_off);
        ASSERT_EQ(0, std::memcmp(dst.data() + kGuard + dst_off, src.data() + src_off, bytes)) << what;
        for (size_t i = 0; i < kGuard + dst_off; ++i) ASSERT_EQ(0xA5, dst[i]) << what << " before, at " << i;
        for (size_t i = kGuard + dst_off + bytes; i < dst.size(); ++i)
          ASSERT_EQ(0xA5, dst[i]) << what << " after, at " << i;
      }
}

}  // namespace
}  // namespace lockstep::comm
