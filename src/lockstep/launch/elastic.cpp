#include "lockstep/launch/elastic.h"

#include <algorithm>
#include <thread>

#include "lockstep/core/error.h"

namespace lockstep::launch {
namespace {

constexpr auto kPollEvery = std::chrono::milliseconds(500);
constexpr auto kNap = std::chrono::milliseconds(50);

int to_int(const store::Bytes& b) { return std::stoi(store::to_string(b)); }

}  // namespace

ElasticRendezvous::ElasticRendezvous(store::Store& store, const LaunchConfig& cfg, bool host)
    : store_(store), cfg_(cfg), host_(host) {}

std::string ElasticRendezvous::key(int round, const std::string& what) const {
  return str_cat("lockstep/rdzv/", round, "/", what);
}

// The host (always node 0 of every round) admits the nodes that joined: waits for MIN (up
// to the store timeout), then for MAX or `settle` more, and publishes the count.
int ElasticRendezvous::close_round(int round) {
  const auto give_up = Clock::now() + cfg_.store_timeout;
  Clock::time_point settle_until{};
  auto joined = [&] { return 1 + int(store_.add(key(round, "others"), 0)); };
  for (;;) {
    const int n = joined();
    if (n >= cfg_.nnodes) break;
    if (n >= cfg_.min_nodes) {
      if (settle_until == Clock::time_point{}) settle_until = Clock::now() + cfg_.rdzv_settle;
      if (Clock::now() >= settle_until) break;
    } else if (Clock::now() >= give_up) {
      LOCKSTEP_THROW(TimeoutError, "elastic rendezvous round ", round, ": only ", n, " of at least ",
                     cfg_.min_nodes, " nodes joined within ", cfg_.store_timeout.count() / 1000,
                     " s; start the missing nodes (same --master-addr, --master-port and "
                     "LOCKSTEP_STORE_TOKEN) or lower the minimum of --nnodes");
    }
    std::this_thread::sleep_for(kNap);
  }
  const int admitted = std::min(joined(), cfg_.nnodes);
  return to_int(store_.compare_set(key(round, "closed"), {}, store::to_bytes(std::to_string(admitted))));
}

Membership ElasticRendezvous::join(int round) {
  for (;; ++round) {
    // The host is node 0; the others are numbered 1, 2, ... in the order they arrive.
    const int index = host_ ? 0 : int(store_.add(key(round, "others"), 1));
    store_.set(key(round, str_cat("node/", index)), std::to_string(cfg_.nproc_per_node));
    int admitted = 0;
    if (host_) {
      admitted = close_round(round);
    } else {
      // A standby may wait through a whole round of training: wait in slices, watching for
      // the end of the job. Only round 0 has a deadline (the host must come up at all).
      const auto give_up = Clock::now() + cfg_.store_timeout;
      while (!store_.check({key(round, "closed")})) {
        for (const char* end : {"lockstep/rdzv/stopped", "lockstep/rdzv/finished"})
          if (store_.check({end}))
            LOCKSTEP_THROW(AbortedError, "the job ended (", store::to_string(store_.get(end, cfg_.store_timeout)),
                           ") while this node waited to join round ", round);
        if (round == 0 && Clock::now() >= give_up)
          LOCKSTEP_THROW(TimeoutError, "elastic rendezvous: the store host (the launcher with "
                         "--node-rank 0) did not open round 0 within ", cfg_.store_timeout.count() / 1000,
                         " s; is it running?");
        std::this_thread::sleep_for(kNap);
      }
      admitted = to_int(store_.get(key(round, "closed"), cfg_.store_timeout));
    }
    if (index >= admitted) continue;  // the round filled up before this node came: next one
    Membership m;
    m.round = round;
    m.node_rank = index;
    m.nodes = admitted;
    m.world = 0;
    for (int n = 0; n < admitted; ++n) {
      const int procs = to_int(store_.get(key(round, str_cat("node/", n)), cfg_.store_timeout));
      if (n < index) m.rank_offset += procs;
      m.world += procs;
    }
    return m;
  }
}

std::optional<ElasticRendezvous::Stop> ElasticRendezvous::should_stop(const Membership& m) {
  const auto now = Clock::now();
  if (now < next_poll_) return std::nullopt;
  next_poll_ = now + kPollEvery;
  if (store_.check({"lockstep/rdzv/stopped"}))
    return Stop{store::to_string(store_.get("lockstep/rdzv/stopped", cfg_.store_timeout)), false, true};
  if (auto dead = check_heartbeats(m)) return dead;
  if (store_.check({key(m.round, "failed")}))
    return Stop{store::to_string(store_.get(key(m.round, "failed"), cfg_.store_timeout)), true, false};
  if (m.nodes < cfg_.nnodes && store_.add(key(m.round + 1, "others"), 0) > 0)
    return Stop{str_cat("a node is waiting to join (round ", m.round, " has ", m.nodes, " of at most ",
                        cfg_.nnodes, "): restarting with more nodes"), false, false};
  return std::nullopt;
}

// Beats for this node and watches the others' beats move.
std::optional<ElasticRendezvous::Stop> ElasticRendezvous::check_heartbeats(const Membership& m) {
  const auto now = Clock::now();
  if (beats_round_ != m.round) {
    beats_round_ = m.round;
    beats_.assign(size_t(m.nodes), -1);
    beat_changed_.assign(size_t(m.nodes), now);
  }
  store_.add(key(m.round, str_cat("beat/", m.node_rank)), 1);
  for (int n = 0; n < m.nodes; ++n) {
    if (n == m.node_rank) continue;
    const int64_t b = store_.add(key(m.round, str_cat("beat/", n)), 0);
    if (b != beats_[size_t(n)]) {
      beats_[size_t(n)] = b;
      beat_changed_[size_t(n)] = now;
    } else if (now - beat_changed_[size_t(n)] > kDeadAfter &&
               !store_.check({key(m.round, str_cat("done/", n))})) {
      const std::string why = str_cat("the launcher of node ", n, " has not beaten for ", kDeadAfter.count(),
                                      " s (killed, hung, or its host is gone)");
      report_failure(m, why);
      return Stop{why, true, false};
    }
  }
  return std::nullopt;
}

void ElasticRendezvous::report_failure(const Membership& m, const std::string& why) {
  store_.compare_set(key(m.round, "failed"), {}, store::to_bytes(str_cat("node ", m.node_rank, ": ", why)));
}

void ElasticRendezvous::stop_job(const std::string& why) {
  store_.compare_set("lockstep/rdzv/stopped", {}, store::to_bytes(why));
}

void ElasticRendezvous::finished(const Membership& m) {
  try {
    store_.set(key(m.round, str_cat("done/", m.node_rank)), "1");
    store_.compare_set("lockstep/rdzv/finished", {}, store::to_bytes("its workers finished"));
    // The store lives in the host's launcher: it stays until every node has said it is done.
    if (host_) {
      std::vector<std::string> all;
      for (int n = 0; n < m.nodes; ++n) all.push_back(key(m.round, str_cat("done/", n)));
      store_.wait(all, cfg_.store_timeout);
    }
  } catch (const Error&) {
    // Done either way: a node that never reports (or a store already gone) changes nothing here.
  }
}

}  // namespace lockstep::launch
