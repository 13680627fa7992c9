// A program outside lockstep's tree, built against an installed lockstep through
// find_package(lockstep) + lockstep::lockstep, or through pkg-config (FindPackageTest.cmake).
// One rank: an all-reduce on native and on every other backend whose plugin loads (but mpi).
#include <cstdio>
#include <exception>
#include <vector>

#include "lockstep/comm/backends/registry.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/store/hash_store.h"

int main() try {
  using namespace lockstep;
  comm::register_builtin_backends();
  store::HashStore store;
  for (const auto& backend : comm::available_backends()) {
    // mpi belongs under mpirun; nccl needs a GPU.
    if (backend == "mpi" || !comm::backend_unavailable_reason(backend, 1).empty()) continue;
    auto pg = comm::ProcessGroup::create(backend, store, 0, 1);
    std::vector<float> x{1.5f, 2.5f};
    pg->allreduce(std::span<float>(x), comm::ReduceOp::sum).wait();
    std::printf("consumer: %s all-reduce %.1f %.1f\n", backend.c_str(), x[0], x[1]);
  }
  std::printf("consumer: %s\n", comm::backends_summary().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "consumer: %s\n", e.what());
  return 1;
}
