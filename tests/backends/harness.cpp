#include "harness.h"

#include <cmath>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

#include "lockstep/comm/backends/registry.h"
#include "lockstep/core/error.h"
#include "lockstep/store/file_store.h"
#include "lockstep/store/hash_store.h"

namespace lockstep::comm::conformance {
namespace {

int env_or(const char* name, int def) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : def;
}

bool mpi_mode() {
  const char* v = std::getenv("LOCKSTEP_TEST_MPI");
  return v != nullptr && std::string(v) == "1";
}

}  // namespace

std::vector<Case> cases() {
  if (mpi_mode()) {
    const int world = env_or("OMPI_COMM_WORLD_SIZE", env_or("PMI_SIZE", 1));
    return {Case{"mpi", world, true}};
  }
  std::vector<Case> out;
  for (const auto& b : built_backends()) {
    if (b == "mpi") continue;  // processes only: see tests/backends/CMakeLists.txt
    for (int w = 1; w <= 4; ++w) out.push_back(Case{b, w, false});
  }
  return out;
}

std::string case_name(const Case& c) { return c.backend + "_w" + std::to_string(c.world); }

Options test_options(const std::string& name, Millis timeout) {
  Options o;
  o.group_name = name;
  o.timeout = timeout;
  return o;
}

void run_ranks_raw(const Case& c, const std::function<void(int, store::Store&)>& fn) {
  store::HashStore store;
  if (c.mpi_process) {
    // The ranks of the MPI job share a FileStore in the directory run_under_mpirun made (a new
    // file per call: every rank makes the same calls in the same order), so that the flight
    // recorder's reports and the debug checks see each other.
    static int calls = 0;
    const char* env = std::getenv("LOCKSTEP_TEST_STORE_DIR");
    const std::string dir = env ? env : "";
    const int rank = env_or("OMPI_COMM_WORLD_RANK", env_or("PMI_RANK", 0));
    if (dir.empty()) return fn(rank, store);
    store::FileStore shared(str_cat(dir, "/store-", calls++), std::chrono::seconds(60));
    fn(rank, shared);
    return;
  }
  std::mutex mu;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int r = 0; r < c.world; ++r)
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

void run_ranks(const Case& c, const std::function<void(ProcessGroup&)>& fn,
               const Options& options) {
  run_ranks_raw(c, [&](int rank, store::Store& store) {
    auto pg = ProcessGroup::create(c.backend, store, rank, c.world, options);
    fn(*pg);
  });
}

double reduce_input(int rank, size_t i, DType dt, ReduceOp op) {
  if (op == ReduceOp::prod) return 1.0 + ((size_t(rank) + i) % 3 == 0);
  const int v = int((size_t(rank) * 7 + i * 3) % 9);
  return dt == DType::u8 ? v : v - 4;
}

double reduce_reference(int world, size_t i, DType dt, ReduceOp op) {
  double acc = reduce_input(0, i, dt, op);
  for (int r = 1; r < world; ++r) {
    const double v = reduce_input(r, i, dt, op);
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

double move_input(int rank, size_t i) { return double((size_t(rank) * 131 + i * 7) % 97); }

std::vector<uint8_t> make_buffer(size_t count, DType dt, const std::function<double(size_t)>& f) {
  std::vector<uint8_t> b(std::max<size_t>(count, 1) * dtype_size(dt));
  for (size_t i = 0; i < count; ++i) store_from_double(b.data(), dt, i, f(i));
  return b;
}

std::string compare(const void* buf, size_t count, DType dt,
                    const std::function<double(size_t)>& want) {
  double tol = 0;
  switch (dt) {
    case DType::f32: tol = 1e-6; break;
    case DType::f64: tol = 1e-12; break;
    case DType::f16: tol = 2e-3; break;
    case DType::bf16: tol = 1.6e-2; break;
    default: tol = 0;
  }
  size_t wrong = 0, first = 0;
  double got0 = 0, want0 = 0;
  for (size_t i = 0; i < count; ++i) {
    const double g = load_as_double(buf, dt, i), w = want(i);
    if (std::fabs(g - w) > tol * std::max(1.0, std::fabs(w))) {
      if (wrong++ == 0) {
        first = i;
        got0 = g;
        want0 = w;
      }
    }
  }
  if (wrong == 0) return "";
  return str_cat(dtype_name(dt), ": ", wrong, " of ", count, " wrong; first at ", first, ": got ",
                 got0, ", want ", want0);
}

}  // namespace lockstep::comm::conformance
