// Elastic membership for `lockstep run --nnodes MIN:MAX`: the node launchers meet in numbered
// rounds through the job's store. Each round admits the nodes that joined (at least MIN, at
// most MAX), numbers them in join order and places their workers (RANK offsets, WORLD_SIZE).
// A worker failure on any node ends the round everywhere; the survivors (and any node that
// has come up since) meet in the next round, so training continues with fewer or more
// nodes, resuming from its latest checkpoint. A node that arrives while a round runs with
// fewer than MAX nodes ends the round too (scale up); that does not count as a restart.
// Launchers heartbeat through the store while their workers run: a node whose launcher
// stops beating for kDeadAfter (killed, host lost) ends the round like a failure.
//
//   ElasticRendezvous rdzv(store, cfg);
//   Membership m = rdzv.join(0);           // blocks until round 0 closes with this node in it
//   ... run the workers, polling rdzv.should_stop(m) ...
//   rdzv.report_failure(m, "worker rank 3 exited with code 1");
//
// The store lives in the launcher of --node-rank 0, which must stay up for the whole job.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "lockstep/launch/launcher.h"
#include "lockstep/store/store.h"

namespace lockstep::launch {

struct Membership {
  int round = 0;
  int node_rank = 0;    // this node's index in the round (join order)
  int nodes = 1;        // nodes admitted to the round
  int world = 1;        // workers in the round, all nodes together
  int rank_offset = 0;  // RANK of this node's first worker
};

class ElasticRendezvous {
 public:
  // cfg: min_nodes..nnodes nodes, nproc_per_node workers here; `host`: this launcher hosts
  // the store and closes each round (after MIN nodes joined: at MAX, or `settle` later).
  ElasticRendezvous(store::Store& store, const LaunchConfig& cfg, bool host);

  // Joins round `round` (or, when that round closed without this node, waits as a standby
  // for the next one) and returns this node's place. Throws TimeoutError naming what it
  // waited for, or AbortedError when the job was stopped or finished meanwhile.
  Membership join(int round);

  // Polled while the round's workers run (cheap: at most one store call per poll_every):
  // why this node must stop its workers now, if it must.
  struct Stop {
    std::string why;
    bool counts_as_restart;  // a failure (true) or a scale-up (false)
    bool final;              // the job was stopped: do not rejoin
  };
  std::optional<Stop> should_stop(const Membership& m);

  // This node's workers failed in round m: tells the other nodes (first failure wins).
  void report_failure(const Membership& m, const std::string& why);
  // Ends the job on every node (out of restarts, or interrupted).
  void stop_job(const std::string& why);
  // This node's workers all finished: its heartbeat may stop; standbys may leave.
  void finished(const Membership& m);

 private:
  std::string key(int round, const std::string& what) const;
  int close_round(int round);
  std::optional<Stop> check_heartbeats(const Membership& m);

  store::Store& store_;
  const LaunchConfig& cfg_;
  bool host_;
  Clock::time_point next_poll_{};
  int beats_round_ = -1;  // the round the two vectors below describe
  std::vector<int64_t> beats_;
  std::vector<Clock::time_point> beat_changed_;
};

inline constexpr std::chrono::seconds kDeadAfter{10};

}  // namespace lockstep::launch
