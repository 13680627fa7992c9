#include "lockstep/plan/cost_model.h"

#include <algorithm>
#include <cmath>

#include "lockstep/core/error.h"

namespace lockstep::plan {
namespace {

// The native backend's switch from recursive doubling to the ring (comm/algorithms.cpp).
constexpr double kDoublingMaxBytes = 64 << 10;

double msg(const Link& l, double bytes) {
  return l.alpha + bytes / l.beta;
}

int floor_pow2(int p) {
  int q = 1;
  while (q * 2 <= p) q *= 2;
  return q;
}

// One exchange between partners `distance` ranks apart (ranks numbered node by node), each
// sending `bytes`. Off-node, every worker of the node sends at once through the node's NIC.
double exchange(const Topology& t, int distance, double bytes) {
  if (distance < t.per_node) return msg(t.intra, bytes);
  return t.inter.alpha + double(t.per_node) * bytes / t.inter.beta;
}

// Ring over all workers: each of its 2(p-1) steps moves n/p on every link at once, and one
// link per node boundary leaves each node, so a step costs the slower of the two kinds.
double ring(double n, const Topology& t) {
  const int p = t.workers();
  const double c = n / p;
  double step = msg(t.intra, c);
  if (t.nodes > 1) step = t.per_node > 1 ? std::max(step, msg(t.inter, c)) : msg(t.inter, c);
  return 2.0 * (p - 1) * step;
}

// Ranks beyond the largest power of two fold into a partner first and get the result back
// last: two extra exchanges of the whole buffer (taken as off-node when there are nodes).
double fold(double n, const Topology& t) {
  if (floor_pow2(t.workers()) == t.workers()) return 0;
  return 2.0 * (t.nodes > 1 ? msg(t.inter, n) : msg(t.intra, n));
}

// Recursive halving (distance p/2, p/4, ..., bytes n/2, n/4, ...) then doubling back.
double halving_doubling(double n, const Topology& t) {
  const int q = floor_pow2(t.workers());
  double s = 0, bytes = n;
  for (int d = q / 2; d >= 1; d /= 2) {
    bytes /= 2;
    s += 2.0 * exchange(t, d, bytes);
  }
  return s + fold(n, t);
}

double doubling(double n, const Topology& t) {
  const int q = floor_pow2(t.workers());
  double s = 0;
  for (int d = 1; d < q; d *= 2) s += exchange(t, d, n);
  return s + fold(n, t);
}

// Ring reduce-scatter of n over the k workers of a node (the all-gather costs the same).
double intra_half_ring(double n, const Topology& t) {
  const int k = t.per_node;
  return (k - 1) * msg(t.intra, n / k);
}

// Intra reduce-scatter, then the k workers of a node each all-reduce their n/k shard with
// their peers on the other nodes (k rings at once through the NIC), then intra all-gather.
double hierarchical(double n, const Topology& t) {
  if (t.nodes == 1 || t.per_node == 1) return ring(n, t);
  const int N = t.nodes;
  const double inter = 2.0 * (N - 1) * (t.inter.alpha + n / (double(N) * t.inter.beta));
  return 2.0 * intra_half_ring(n, t) + inter;
}

void check_link(const Link& l, const std::string& what, const std::string& where) {
  if (!(l.beta > 0) || !std::isfinite(l.beta))
    LOCKSTEP_THROW(InvalidArgument, where, ": the ", what, " bandwidth is ", l.beta,
                   " bytes/s; it must be a positive, finite number (e.g. 1e9 for 8 Gbit/s)");
  if (!(l.alpha >= 0) || !std::isfinite(l.alpha))
    LOCKSTEP_THROW(InvalidArgument, where, ": the ", what, " latency is ", l.alpha,
                   " s; it must be zero or positive and finite");
}

}  // namespace

Algo parse_algo(const std::string& name) {
  if (name == "ring") return Algo::ring;
  if (name == "hd" || name == "halving-doubling") return Algo::halving_doubling;
  if (name == "doubling") return Algo::doubling;
  if (name == "hier" || name == "hierarchical") return Algo::hierarchical;
  if (name == "auto") return Algo::lockstep_auto;
  LOCKSTEP_THROW(
      InvalidArgument, "unknown all-reduce algorithm '", name,
      "': use ring, hd (recursive halving-doubling), doubling, hier (hierarchical) or auto");
}

std::string algo_name(Algo a) {
  switch (a) {
    case Algo::ring:
      return "ring";
    case Algo::halving_doubling:
      return "hd";
    case Algo::doubling:
      return "doubling";
    case Algo::hierarchical:
      return "hier";
    case Algo::lockstep_auto:
      return "auto";
  }
  return "?";
}

void check_topology(const Topology& t, const std::string& where) {
  if (t.nodes < 1 || t.per_node < 1)
    LOCKSTEP_THROW(InvalidArgument, where, ": a topology of ", t.nodes, " node(s) x ", t.per_node,
                   " worker(s) per node; both must be at least 1");
  if (t.per_node > 1) check_link(t.intra, "intra-node", where);
  if (t.nodes > 1) check_link(t.inter, "inter-node", where);
}

double allreduce_seconds(Algo a, double bytes, const Topology& t) {
  if (t.workers() <= 1 || bytes <= 0) return 0;
  switch (a) {
    case Algo::ring:
      return ring(bytes, t);
    case Algo::halving_doubling:
      return halving_doubling(bytes, t);
    case Algo::doubling:
      return doubling(bytes, t);
    case Algo::hierarchical:
      return hierarchical(bytes, t);
    case Algo::lockstep_auto:
      break;
  }
  if (t.nodes > 1 && t.per_node > 1) return hierarchical(bytes, t);
  const bool small =
      bytes <= kDoublingMaxBytes || (t.workers() == 2 && bytes <= 2 * kDoublingMaxBytes);
  return small ? doubling(bytes, t) : ring(bytes, t);
}

Overlap simulate_overlap(const std::vector<Bucket>& buckets, double backward_end, const Topology& t,
                         Algo a) {
  Overlap o;
  double end = 0;
  for (const Bucket& b : buckets) {
    const double d = allreduce_seconds(a, b.bytes, t);
    end = std::max(b.ready, end) + d;
    o.comm += d;
  }
  o.comm_end = end;
  o.exposed = std::max(0.0, end - backward_end);
  return o;
}

}  // namespace lockstep::plan
