// Gradient buckets: which parameters are reduced together (BucketPlan, a pure function of
// the order and sizes), and where each bucket's floats live (BucketStorage).
//
// Assignment follows PyTorch DDP: walk the parameters in the order their gradients become
// final (reverse order of use), add each to the open bucket, and close the bucket once it
// holds at least its cap — `first_bucket_bytes` for the first (so the first all-reduce
// starts early in backward), `bucket_cap_bytes` for the rest. One difference: the first
// bucket closes *before* a parameter that would take it past its cap (unless it is empty),
// so a small model with one large early layer still gets an all-reduce during backward.
//
// Storage is zero copy whenever a bucket's gradients tile one contiguous range of memory:
// the bucket is then a span over the model's own gradients and the all-reduce writes the
// averaged values straight back. Otherwise (a framework that cannot re-lay its gradients
// out) the bucket owns a buffer and gradients are copied in before and out after.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "lockstep/core/buffer.h"
#include "lockstep/ddp/params.h"

namespace lockstep::ddp {

struct BucketOptions {
  size_t bucket_cap_bytes = size_t(25) << 20;
  size_t first_bucket_bytes = size_t(1) << 20;
};

struct BucketPlan {
  // buckets[b] lists parameter indices in ready order; bucket 0 is reduced first.
  std::vector<std::vector<size_t>> buckets;
  std::vector<size_t> bucket_of;  // parameter index -> bucket

  size_t size() const { return buckets.size(); }
  // "bucket 2 (4 params: 0.weight, 0.bias, ...)" for error messages.
  std::string describe(size_t b, const ParamSource& params) const;
};

// `order` lists every parameter index once (ready order); numel[i] = elements of param i.
// With `dtypes` (dtypes[i]: param i's), a bucket holds one dtype: a parameter of another
// dtype than the open bucket's closes it, and sizes count dtype_size bytes per element.
BucketPlan plan_buckets(std::span<const size_t> order, std::span<const size_t> numel,
                        const BucketOptions& opt, size_t elem_bytes = sizeof(float),
                        std::span<const DType> dtypes = {});

// The storage of one bucket (all of one dtype) and, per parameter, its offset in it.
struct BucketView {
  std::span<float> data;        // float32 buckets (empty for other dtypes)
  std::vector<size_t> params;   // as in the plan
  std::vector<size_t> offsets;  // offsets[k]: element where params[k]'s gradient starts
  bool zero_copy = true;
  DType dtype = DType::f32;
  std::span<std::byte> bytes{};  // the same memory as raw bytes, for every dtype
  size_t count() const { return bytes.size() / dtype_size(dtype); }
};

class BucketStorage {
 public:
  // Binds every bucket of `plan` to memory: a view of the gradients when they are contiguous,
  // an owned staging buffer otherwise.
  void bind(const BucketPlan& plan, ParamSource& params);
  size_t size() const { return views_.size(); }
  BucketView& view(size_t b) { return views_[b]; }
  const BucketView& view(size_t b) const { return views_[b]; }
  size_t copied_buckets() const;
  // For staged buckets: gradients -> bucket before reduction, bucket -> gradients after.
  void copy_in(size_t b, ParamSource& params);
  void copy_out(size_t b, ParamSource& params);

 private:
  std::vector<BucketView> views_;
  std::vector<AlignedBuffer> staging_;
};

}  // namespace lockstep::ddp
