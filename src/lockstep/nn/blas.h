// The GEMM every layer goes through (OpenBLAS cblas_sgemm, row-major), and the compute
// thread count: the only process-global setting of the engine. It comes from
// LOCKSTEP_NUM_THREADS (default 1: one compute thread per worker) unless set explicitly.
// OpenBLAS splits work over M/N, never over K, so a fixed thread count gives bitwise
// reproducible results.
#pragma once

#include <cstdint>

namespace lockstep::nn {

void set_num_threads(int n);  // throws InvalidArgument for n < 1
int num_threads();
// Applies LOCKSTEP_NUM_THREADS once per process (first Model, or first call here);
// an explicit set_num_threads() wins. Throws ConfigError on a malformed value.
void init_threads_from_env();

// C[M,N] = alpha * op(A) * op(B) + beta * C, all row-major; op = transpose when t* is true.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace lockstep::nn
