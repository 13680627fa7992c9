// elastic_worker: one worker of the elastic launcher test (elastic_test) and of the link-cut
// test (netns_link_cut_test). All-reduces a counter every 10 ms for --seconds (all ranks stop
// together), checking each result against WORLD_SIZE, with collectives timing out after
// --timeout seconds; prints a line when it has started and one when it is done. Exit 0, or
// 1 with the error. --backend NAME picks the process group's backend (default native; mpi
// for the `lockstep run --via mpirun` test). --ready-file P: create P.<rank> once the first
// all-reduce is done (a test's cue that the ranks are in their loop of collectives).
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>

#include "lockstep/comm/backends/registry.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/store/rendezvous.h"

using namespace lockstep;

int main(int argc, char** argv) try {
  double seconds = 5, timeout_s = 20;
  std::string backend = "native", ready;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--backend")) backend = argv[i + 1];
    if (!std::strcmp(argv[i], "--ready-file")) ready = argv[i + 1];
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--timeout")) timeout_s = std::atof(argv[i + 1]);
  }
  const DistEnv env = read_dist_env();
  const char* round = std::getenv("LOCKSTEP_RESTART_COUNT");
  auto store = store::connect_store(env, std::chrono::seconds(60));
  comm::Options o;
  o.timeout = std::chrono::milliseconds(int64_t(timeout_s * 1000));
  comm::register_builtin_backends();
  auto pg = comm::ProcessGroup::create(backend, *store, env.rank, env.world_size, o);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  long n = 0;
  for (bool done = false; !done;) {
    // {1, this rank's time is up}: the sum must be the world size; all stop together once
    // any rank's time is up (every rank issues the same number of collectives).
    float v[2] = {1.0f, std::chrono::steady_clock::now() >= end ? 1.0f : 0.0f};
    pg->allreduce(v, 2, DType::f32, comm::ReduceOp::sum).wait();
    if (v[0] != float(env.world_size)) {
      std::fprintf(stderr, "elastic_worker rank %d: all-reduce gave %g, want %d\n", env.rank, v[0], env.world_size);
      return 1;
    }
    done = v[1] > 0;
    if (n++ == 0) {
      std::printf("elastic_worker rank %d of %d (round %s): started\n", env.rank, env.world_size, round);
      if (!ready.empty()) {
        const std::string path = ready + "." + std::to_string(env.rank);
        std::FILE* f = std::fopen(path.c_str(), "w");
        if (!f) {
          std::fprintf(stderr, "elastic_worker rank %d: cannot create %s: %s\n", env.rank, path.c_str(),
                       std::strerror(errno));
          return 1;
        }
        std::fclose(f);
      }
    }
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pg->barrier().wait();
  std::printf("elastic_worker rank %d of %d (round %s): %ld all-reduces ok (backend %s)\n", env.rank, env.world_size,
              round, n, backend.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "elastic_worker: %s\n", e.what());
  return 1;
}
