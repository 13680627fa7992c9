#pragma once
// The one mapping from a LibTorch scalar type to the lockstep dtype that holds it in place, for
// the DDP adapter, its checkpoints and the Python c10d backend (python/lockstep_torch).
// Header-only: the Python module uses it without linking lockstep::torch.

#include <c10/core/ScalarType.h>

#include <optional>

#include "lockstep/core/dtype.h"

namespace lockstep::torch {

// The lockstep dtype with the same bytes and arithmetic as `t`, or none. bool is not mapped:
// a reduction over it is not the u8 reduction (callers that only move bytes map it themselves).
inline std::optional<DType> lockstep_dtype(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat:
      return DType::f32;
    case c10::kDouble:
      return DType::f64;
    case c10::kHalf:
      return DType::f16;
    case c10::kBFloat16:
      return DType::bf16;
    case c10::kInt:
      return DType::i32;
    case c10::kLong:
      return DType::i64;
    case c10::kByte:
      return DType::u8;
    default:
      return std::nullopt;
  }
}

// The LibTorch scalar type lockstep_dtype maps to `t`, or none.
inline std::optional<c10::ScalarType> torch_dtype(DType t) {
  for (c10::ScalarType s :
       {c10::kFloat, c10::kDouble, c10::kHalf, c10::kBFloat16, c10::kInt, c10::kLong, c10::kByte})
    if (lockstep_dtype(s) == t) return s;
  return std::nullopt;
}

}  // namespace lockstep::torch
