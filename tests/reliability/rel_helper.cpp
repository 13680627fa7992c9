// Small programs the fault-injection suite runs as real processes:
//   rel_helper serve-store TOKEN PORT_FILE   hosts a rendezvous store on 127.0.0.1 (an
//                                            ephemeral port, written to PORT_FILE) until killed
//   rel_helper out-of-order                  one rank of a job (under `lockstep run`) that
//                                            calls a collective the other ranks do not: rank 0
//                                            all-reduces while the others broadcast
// Errors go to stderr as "rel_helper: <what>" with exit code 1.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/store/rendezvous.h"
#include "lockstep/store/tcp_store_server.h"

namespace {

using namespace lockstep;

int serve_store(const std::string& token, const std::string& port_file) {
  store::TcpStoreServer server({.host = "127.0.0.1", .port = 0, .token = token});
  server.start();
  std::ofstream(port_file + ".tmp") << server.port() << "\n";
  std::rename((port_file + ".tmp").c_str(), port_file.c_str());
  for (;;) ::pause();  // until the test kills it
}

int out_of_order() {
  const DistEnv env = read_dist_env();
  auto st = store::connect_store(env, std::chrono::seconds(20));
  comm::Options opts;
  opts.timeout = std::chrono::seconds(20);
  auto pg = comm::ProcessGroup::create("native", *st, env.rank, env.world_size, opts);
  std::vector<float> v(1024, float(env.rank));
  // A correct first collective, then the mismatch.
  pg->allreduce(v.data(), v.size(), DType::f32, comm::ReduceOp::sum).wait();
  if (env.rank == 0)
    pg->allreduce(v.data(), v.size(), DType::f32, comm::ReduceOp::sum).wait();
  else
    pg->broadcast(v.data(), v.size(), DType::f32, 0).wait();
  std::printf("rel_helper: rank %d finished the mismatched collective without an error\n",
              env.rank);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 4 && std::strcmp(argv[1], "serve-store") == 0) return serve_store(argv[2], argv[3]);
    if (argc == 2 && std::strcmp(argv[1], "out-of-order") == 0) return out_of_order();
    std::fprintf(stderr,
                 "usage: rel_helper serve-store TOKEN PORT_FILE | rel_helper out-of-order\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rel_helper: %s\n", e.what());
    return 1;
  }
}
