// PowerSGD (Vogels et al., 2019) as a comm hook: each gradient matrix M (n x m, a weight
// reshaped to [shape[0], rest]) travels as two thin factors instead of n*m floats.
//
//   phase 1 (launch, on the backward thread): M = grad + error;  P = M Q;
//            all-reduce [vectors of the bucket | all P] in one call
//   phase 2 (finish): orthonormalise P;  Q = M^T P;  all-reduce all Q;
//            grad = P Q^T;  error = M - grad        (error feedback: nothing is lost)
//
// Q is kept from one step to the next (warm start), so one power iteration per step
// tracks the top-r subspace. Vectors (biases) and matrices too small to gain at least
// `min_compression` are all-reduced uncompressed. The first `start_iter` steps use plain
// averaging, as the paper recommends.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "lockstep/ddp/comm_hook.h"

namespace lockstep::ddp {

struct PowerSgdOptions {
  int rank = 1;               // r: columns of P and Q
  int64_t start_iter = 10;    // plain all-reduce before this step
  float min_compression = 2;  // compress only when n*m >= min_compression * (n+m)*r
  bool warm_start = true;     // keep Q between steps (false: fresh random Q each step)
  uint64_t seed = 0x5eed;     // Q's initial values; identical on every rank
};

class PowerSgdHook final : public CommHook {
 public:
  explicit PowerSgdHook(PowerSgdOptions opt);
  std::string name() const override { return "powersgd"; }
  Pending launch(GradBucket& bucket, comm::ProcessGroup& pg) override;
  void reset_state() override;
  // Floats that travel per step for the buckets seen so far, compressed vs plain.
  size_t wire_floats() const;
  size_t plain_floats() const;

 private:
  struct Matrix {  // per compressed parameter
    size_t n = 0, m = 0;
    std::vector<float> q;      // m x r
    std::vector<float> error;  // n x m: M after launch, residual after finish
  };
  struct Plan {  // per bucket, rebuilt when the bucket's parameters change
    std::vector<size_t> params, plain, compressed;  // positions within the bucket
    size_t plain_floats = 0, p_floats = 0, q_floats = 0, bucket_floats = 0;
    AlignedBuffer first, second;  // [plain | P...] and [Q...]
  };
  Plan& plan_for(const GradBucket& bucket);
  Matrix& matrix(size_t param, size_t n, size_t m);
  void init_q(Matrix& mat, size_t param);
  void finish(GradBucket bucket, Plan& plan, comm::ProcessGroup& pg, Millis timeout);

  PowerSgdOptions opt_;
  std::vector<std::unique_ptr<Matrix>> matrices_;  // by parameter index
  std::deque<Plan> plans_;                         // by bucket index
};

// Gram-Schmidt on the r columns of a row-major n x r matrix.
void orthonormalize_columns(float* p, size_t n, size_t r);

}  // namespace lockstep::ddp
