// Helpers for thread-per-rank collective tests: run a function on W threads that share one
// HashStore, rethrowing the first failure; deterministic inputs and a serial reference.
#pragma once

#include <cmath>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lockstep/comm/native_process_group.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/core/dtype.h"
#include "lockstep/store/hash_store.h"

namespace lockstep::comm::testing {

inline void run_ranks(int world, const std::function<void(int rank, store::Store&)>& fn) {
  store::HashStore store;
  std::mutex mu;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r, store);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!first) first = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

inline Options test_options(const std::string& transport, const std::string& name = "test") {
  Options o;
  o.transport = transport;
  o.group_name = name;
  o.timeout = std::chrono::seconds(60);
  auto native = std::make_shared<NativeOptions>();
  native->shm_chunk_bytes = 64 << 10;  // small staging rounds: exercises the multi-round paths
  o.backend = native;
  return o;
}

// Small integers: every sum, product and average below is exact or nearly so in every dtype.
inline double input_value(int rank, size_t i, DType dt, ReduceOp op) {
  if (op == ReduceOp::prod) return 1.0 + ((size_t(rank) + i) % 5 == 0);
  int v = int((size_t(rank) * 7 + i * 3) % 9);
  return dt == DType::u8 ? v : v - 4;
}

inline std::vector<uint8_t> make_input(int rank, size_t count, DType dt, ReduceOp op,
                                       size_t pad_elems = 0) {
  std::vector<uint8_t> buf((count + pad_elems) * dtype_size(dt) + 1);
  for (size_t i = 0; i < count; ++i)
    store_from_double(buf.data() + pad_elems * dtype_size(dt), dt, i, input_value(rank, i, dt, op));
  return buf;
}

// The serial reference of op over ranks [0, world) at element i.
inline double reference(int world, size_t i, DType dt, ReduceOp op) {
  double acc = input_value(0, i, dt, op);
  for (int r = 1; r < world; ++r) {
    double v = input_value(r, i, dt, op);
    switch (op) {
      case ReduceOp::sum:
      case ReduceOp::avg: acc += v; break;
      case ReduceOp::prod: acc *= v; break;
      case ReduceOp::min: acc = std::min(acc, v); break;
      case ReduceOp::max: acc = std::max(acc, v); break;
    }
  }
  if (op == ReduceOp::avg) acc = dtype_is_float(dt) ? acc / world : std::trunc(acc / world);
  return acc;
}

inline double tolerance(DType dt) {
  switch (dt) {
    case DType::f16: return 1e-2;
    case DType::bf16: return 2e-2;
    case DType::f32: return 1e-6;
    default: return 1e-12;
  }
}

}  // namespace lockstep::comm::testing
