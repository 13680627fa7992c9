// The alpha-beta cost of one all-reduce, and of a step's buckets on one communication stream
// overlapped with backward. Units: seconds, bytes, bytes per second.
//
//   Topology t{.nodes = 4, .per_node = 8, .intra = {2e-6, 150e9}, .inter = {5e-6, 12.5e9}};
//   double s = allreduce_seconds(Algo::ring, 100 << 20, t);
//   Overlap o = simulate_overlap({{1 << 20, 0.004}, ...}, /*backward_end=*/0.020, t, Algo::ring);
//
// A message of n bytes over a link costs alpha + n / beta. `inter.beta` is a node's own
// network bandwidth (its NIC), shared by every worker of the node that talks off-node at once.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace lockstep::plan {

struct Link {
  double alpha = 0;  // seconds per message (latency plus per-message software cost)
  double beta = 0;   // bytes per second
};

struct Topology {
  int nodes = 1;
  int per_node = 1;  // workers per node
  Link intra;        // between workers of one node
  Link inter;        // between nodes (the node's NIC)
  int workers() const { return nodes * per_node; }
};

// ring: 2(p-1) messages of n/p (reduce-scatter + all-gather).
// halving_doubling: Rabenseifner, recursive halving reduce-scatter + doubling all-gather.
// doubling: recursive doubling, log2 p exchanges of the whole buffer (lockstep's small-message
//   algorithm). hierarchical: intra-node reduce-scatter, inter-node ring all-reduce of n/k,
//   intra-node all-gather. lockstep_auto: what the native backend picks (comm/algorithms.cpp:
//   doubling up to 64 KiB, 128 KiB at 2 ranks, ring above).
enum class Algo { ring, halving_doubling, doubling, hierarchical, lockstep_auto };

// "ring", "hd" (or "halving-doubling"), "doubling", "hier" (or "hierarchical"), "auto".
// InvalidArgument naming the accepted names otherwise.
Algo parse_algo(const std::string& name);
std::string algo_name(Algo a);

// Throws InvalidArgument when a link is unusable (beta <= 0 or not finite, alpha < 0) or the
// shape is empty; `where` names the flag or key in the message.
void check_topology(const Topology& t, const std::string& where);

// Seconds for one all-reduce of `bytes` on every worker of `t`. 0 for one worker.
double allreduce_seconds(Algo a, double bytes, const Topology& t);

struct Bucket {
  double bytes = 0;
  double ready = 0;  // seconds after backward started when the bucket's gradients are final
};

struct Overlap {
  double comm = 0;      // sum of the buckets' all-reduce times
  double comm_end = 0;  // when the last bucket's all-reduce ends (after backward start)
  double exposed = 0;   // max(0, comm_end - backward_end): communication not hidden
  double hidden_fraction() const { return comm > 0 ? 1.0 - exposed / comm : 1.0; }
};

// Buckets in order on one stream: bucket i starts at max(ready_i, end_{i-1}).
Overlap simulate_overlap(const std::vector<Bucket>& buckets, double backward_end, const Topology& t,
                         Algo a);

}  // namespace lockstep::plan
