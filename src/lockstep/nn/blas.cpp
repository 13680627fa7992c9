#include "lockstep/nn/blas.h"

#include <cblas.h>

#include <atomic>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "lockstep/core/error.h"

namespace lockstep::nn {
namespace {
std::atomic<int> g_threads{0};  // 0: not configured yet
std::once_flag g_env_once;
}  // namespace

void set_num_threads(int n) {
  if (n < 1) LOCKSTEP_THROW(InvalidArgument, "set_num_threads: need at least 1 thread, got ", n);
  g_threads = n;
  openblas_set_num_threads(n);
}

int num_threads() {
  init_threads_from_env();
  return g_threads.load();
}

void init_threads_from_env() {
  std::call_once(g_env_once, [] {
    if (g_threads.load() != 0) return;  // set explicitly before
    int n = 1;
    if (const char* v = std::getenv("LOCKSTEP_NUM_THREADS"); v != nullptr && *v != '\0') {
      const char* end = v + std::strlen(v);
      auto [p, ec] = std::from_chars(v, end, n);
      if (ec != std::errc() || p != end || n < 1 || n > 1024)
        LOCKSTEP_THROW(ConfigError, "LOCKSTEP_NUM_THREADS='", v, "' is not a thread count in 1..1024; ",
                       "unset it for the default of 1");
    }
    set_num_threads(n);
  });
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

}  // namespace lockstep::nn
