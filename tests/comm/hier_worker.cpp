// hier_worker: one rank of the network-namespace test (netns_hierarchical_test). Started by
// `lockstep run` in each namespace with LOCKSTEP_HOST_ID naming its "host", it all-reduces
// several dtypes, ops and sizes with the native backend's automatic choice, checks every
// element against the serial reference, and checks that the hierarchical all-reduce was
// chosen (its leaders' sub-group registered in the store). Exit 0 and one "ok" line, or 1.
#include <cstdio>
#include <exception>

#include "comm_test_util.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/store/rendezvous.h"

using namespace lockstep;

int main() try {
  const DistEnv env = read_dist_env();
  auto store = store::connect_store(env, std::chrono::seconds(60));
  comm::Options o;
  o.timeout = std::chrono::seconds(60);
  auto pg = comm::ProcessGroup::create("native", *store, env.rank, env.world_size, o);
  size_t checked = 0;
  for (DType dt : {DType::f32, DType::bf16, DType::i64})
    for (comm::ReduceOp op : {comm::ReduceOp::sum, comm::ReduceOp::avg, comm::ReduceOp::max})
      for (size_t count : {size_t(1), size_t(1027), size_t(3) << 20}) {
        if (count > 2000 && dt != DType::f32) continue;
        auto buf = comm::testing::make_input(env.rank, count, dt, op);
        pg->allreduce(buf.data(), count, dt, op).wait();
        for (size_t i = 0; i < count; ++i) {
          double want = comm::testing::reference(env.world_size, i, dt, op);
          double got = load_as_double(buf.data(), dt, i);
          if (std::abs(got - want) > comm::testing::tolerance(dt) * std::max(1.0, std::abs(want))) {
            std::fprintf(stderr, "hier_worker rank %d: allreduce %s %s n=%zu element %zu: %g, want %g\n",
                         env.rank, std::string(dtype_name(dt)).c_str(), std::string(comm::reduce_op_name(op)).c_str(), count, i, got, want);
            return 1;
          }
        }
        ++checked;
      }
  const bool hierarchical = store->check({"lockstep/pg/default/leaders/tcp/addr/0"});
  pg->barrier().wait();
  std::printf("hier_worker rank %d of %d: %zu all-reduces ok, %s\n", env.rank, env.world_size, checked,
              hierarchical ? "hierarchical" : "NOT hierarchical");
  return hierarchical ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "hier_worker: %s\n", e.what());
  return 1;
}
