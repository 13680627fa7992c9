#include "lockstep/ddp/bucket.h"

#include <algorithm>
#include <cstring>

#include "lockstep/core/error.h"

namespace lockstep::ddp {

std::string BucketPlan::describe(size_t b, const ParamSource& params) const {
  const auto& ids = buckets.at(b);
  std::string s = str_cat("bucket ", b, " (", ids.size(), " params: ");
  for (size_t k = 0; k < ids.size() && k < 4; ++k)
    s += (k ? ", " : "") + params.param_info(ids[k]).name;
  if (ids.size() > 4) s += ", ...";
  return s + ")";
}

BucketPlan plan_buckets(std::span<const size_t> order, std::span<const size_t> numel,
                        const BucketOptions& opt, size_t elem_bytes, std::span<const DType> dtypes) {
  if (order.size() != numel.size())
    LOCKSTEP_THROW(InvalidArgument, "plan_buckets: order lists ", order.size(), " parameters but there are ",
                   numel.size());
  BucketPlan plan;
  plan.bucket_of.assign(numel.size(), size_t(-1));
  size_t open_bytes = 0;
  for (size_t i : order) {
    if (i >= numel.size() || plan.bucket_of[i] != size_t(-1))
      LOCKSTEP_THROW(InvalidArgument, "plan_buckets: parameter index ", i, " is out of range or repeated");
    const size_t bytes = numel[i] * (dtypes.empty() ? elem_bytes : dtype_size(dtypes[i]));
    if (!dtypes.empty() && !plan.buckets.empty() && dtypes[plan.buckets.back().back()] != dtypes[i])
      open_bytes = size_t(-1);  // one dtype per bucket
    // The first bucket closes before a parameter that would overflow it, so that its
    // all-reduce really starts early (PyTorch adds it and closes after: a small model whose
    // first layer is large then gets one bucket, ready only when backward ends).
    if (plan.buckets.size() == 1 && open_bytes != size_t(-1) && open_bytes > 0 &&
        open_bytes + bytes > opt.first_bucket_bytes)
      open_bytes = size_t(-1);
    if (plan.buckets.empty() || open_bytes == size_t(-1)) {
      plan.buckets.emplace_back();
      open_bytes = 0;
    }
    plan.buckets.back().push_back(i);
    plan.bucket_of[i] = plan.buckets.size() - 1;
    open_bytes += bytes;
    const size_t cap = plan.buckets.size() == 1 ? opt.first_bucket_bytes : opt.bucket_cap_bytes;
    if (open_bytes >= cap) open_bytes = size_t(-1);  // closed: the next parameter opens a bucket
  }
  return plan;
}

namespace {

// If the gradients of `ids` tile one contiguous range, returns it with each one's offset.
bool contiguous_range(const std::vector<size_t>& ids, ParamSource& params, BucketView& v) {
  const size_t elem = dtype_size(v.dtype);
  std::vector<std::pair<std::byte*, size_t>> spans;  // (start, param position in ids)
  for (size_t k = 0; k < ids.size(); ++k) spans.push_back({params.grad_bytes(ids[k]).data(), k});
  std::sort(spans.begin(), spans.end());
  std::byte* base = spans.front().first;
  std::byte* end = base;
  v.offsets.assign(ids.size(), 0);
  for (auto [start, k] : spans) {
    if (start != end) return false;
    v.offsets[k] = size_t(start - base) / elem;
    end = start + params.grad_bytes(ids[k]).size();
  }
  v.bytes = {base, size_t(end - base)};
  return true;
}

}  // namespace

void BucketStorage::bind(const BucketPlan& plan, ParamSource& params) {
  views_.assign(plan.size(), {});
  staging_.clear();
  staging_.resize(plan.size());
  for (size_t b = 0; b < plan.size(); ++b) {
    BucketView& v = views_[b];
    v.params = plan.buckets[b];
    if (v.params.empty()) continue;
    v.dtype = params.param_info(v.params[0]).dtype;
    if (!contiguous_range(v.params, params, v)) {
      // Staged: gradients packed in plan order into an owned buffer.
      v.zero_copy = false;
      size_t total = 0;
      for (size_t k = 0; k < v.params.size(); ++k) {
        v.offsets[k] = total / dtype_size(v.dtype);
        total += params.grad_bytes(v.params[k]).size();
      }
      staging_[b] = AlignedBuffer(total + sizeof(double));
      v.bytes = {staging_[b].data(), total};
    }
    if (v.dtype == DType::f32)
      v.data = {reinterpret_cast<float*>(v.bytes.data()), v.bytes.size() / sizeof(float)};
  }
}

size_t BucketStorage::copied_buckets() const {
  return size_t(std::count_if(views_.begin(), views_.end(), [](const BucketView& v) { return !v.zero_copy; }));
}

void BucketStorage::copy_in(size_t b, ParamSource& params) {
  BucketView& v = views_[b];
  if (v.zero_copy) return;
  for (size_t k = 0; k < v.params.size(); ++k) {
    auto g = params.grad_bytes(v.params[k]);
    std::memcpy(v.bytes.data() + v.offsets[k] * dtype_size(v.dtype), g.data(), g.size());
  }
}

void BucketStorage::copy_out(size_t b, ParamSource& params) {
  BucketView& v = views_[b];
  if (v.zero_copy) return;
  for (size_t k = 0; k < v.params.size(); ++k) {
    auto g = params.grad_bytes(v.params[k]);
    std::memcpy(g.data(), v.bytes.data() + v.offsets[k] * dtype_size(v.dtype), g.size());
  }
}

}  // namespace lockstep::ddp
