#include "lockstep/ddp/comm_hook.h"

#include "lockstep/core/error.h"
#include "lockstep/ddp/powersgd_hook.h"

namespace lockstep::ddp {

Pending average_in_own_dtype(GradBucket& bucket, comm::ProcessGroup& pg) {
  const bool f32 = bucket.dtype == DType::f32;
  void* data = f32 ? static_cast<void*>(bucket.data.data()) : bucket.bytes.data();
  const size_t n = f32 ? bucket.data.size() : bucket.bytes.size() / dtype_size(bucket.dtype);
  if (!bucket.check_finite) return {pg.allreduce(data, n, bucket.dtype, comm::ReduceOp::avg), {}, nullptr};
  auto finite = std::make_shared<comm::FiniteCheck>();
  return {pg.allreduce_check_finite(data, n, bucket.dtype, comm::ReduceOp::avg, finite), {}, finite};
}

Pending AllreduceHook::launch(GradBucket& bucket, comm::ProcessGroup& pg) {
  return average_in_own_dtype(bucket, pg);
}

CompressHook::CompressHook(DType wire) : wire_(wire) {
  if (wire != DType::f16 && wire != DType::bf16)
    LOCKSTEP_THROW(InvalidArgument, "CompressHook: wire dtype must be float16 or bfloat16, got ", dtype_name(wire));
}

std::string CompressHook::name() const { return wire_ == DType::f16 ? "fp16" : "bf16"; }

Pending CompressHook::launch(GradBucket& bucket, comm::ProcessGroup& pg) {
  if (bucket.dtype != DType::f32) return average_in_own_dtype(bucket, pg);
  if (buffers_.size() <= bucket.index) buffers_.resize(bucket.index + 1);
  AlignedBuffer& buf = buffers_[bucket.index];
  const size_t n = bucket.data.size();
  buf.reserve((n + 1) * sizeof(uint16_t));
  const float scale = 1.0f / float(pg.size());
  const float* src = bucket.data.data();
  if (wire_ == DType::f16) {
    f16* dst = buf.as<f16>().data();
    for (size_t i = 0; i < n; ++i) dst[i] = float_to_f16(src[i] * scale);
  } else {
    bf16* dst = buf.as<bf16>().data();
    for (size_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i] * scale);
  }
  comm::Work w = pg.allreduce(buf.data(), n, wire_, comm::ReduceOp::sum);
  std::span<float> out = bucket.data;
  const DType wire = wire_;
  auto finish = [out, &buf, wire](Millis) {
    if (wire == DType::f16) {
      const f16* h = buf.as<f16>().data();
      for (size_t i = 0; i < out.size(); ++i) out[i] = f16_to_float(h[i]);
    } else {
      const bf16* h = buf.as<bf16>().data();
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_float(h[i]);
    }
  };
  return {std::move(w), finish, nullptr};
}

std::unique_ptr<CommHook> make_comm_hook(const std::string& name) {
  if (name == "allreduce" || name == "avg" || name.empty()) return std::make_unique<AllreduceHook>();
  if (name == "fp16") return std::make_unique<CompressHook>(DType::f16);
  if (name == "bf16") return std::make_unique<CompressHook>(DType::bf16);
  if (name == "powersgd") return std::make_unique<PowerSgdHook>(PowerSgdOptions{});
  if (name.rfind("powersgd:", 0) == 0) {
    PowerSgdOptions o;
    try {
      o.rank = std::stoi(name.substr(9));
    } catch (const std::exception&) {
      LOCKSTEP_THROW(ConfigError, "comm hook '", name, "': expected powersgd:<rank>, e.g. powersgd:2");
    }
    return std::make_unique<PowerSgdHook>(o);
  }
  LOCKSTEP_THROW(ConfigError, "unknown comm hook '", name, "'; known: allreduce, fp16, bf16, powersgd[:rank]");
}

}  // namespace lockstep::ddp
