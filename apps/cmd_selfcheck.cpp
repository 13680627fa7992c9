// `lockstep selfcheck`: a worker program that checks the distributed setup end to end.
// Every worker joins the store, publishes who it is, waits for all the others and, on rank 0,
// prints one line per worker. Run it under the launcher:
//   lockstep run --nproc-per-node 4 -- lockstep selfcheck
#include <unistd.h>

#include <cstdio>

#include "commands.h"
#include "lockstep/core/clock.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/core/log.h"
#include "lockstep/store/rendezvous.h"

namespace lockstep::apps {
namespace {

std::string hostname() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

int selfcheck(double timeout_s) {
  auto t0 = Clock::now();
  DistEnv env = read_dist_env();
  set_log_rank(env.rank);
  Millis timeout(int64_t(timeout_s * 1000));
  auto store = store::connect_store(env, timeout);
  store->set(str_cat("selfcheck/who/", env.rank),
             str_cat("host ", hostname(), " pid ", ::getpid(), " local rank ", env.local_rank));
  store->add("selfcheck/arrived", 1);
  std::vector<std::string> keys;
  for (int r = 0; r < env.world_size; ++r) keys.push_back(str_cat("selfcheck/who/", r));
  store->wait(keys, timeout);
  double met_s = seconds_since(t0);
  if (env.rank == 0) {
    std::printf("selfcheck: %d worker(s) met through the %s store (%s:%d) in %.3f s\n",
                env.world_size, env.source.c_str(), env.master_addr.c_str(), env.master_port,
                met_s);
    for (int r = 0; r < env.world_size; ++r) {
      std::printf("selfcheck:   rank %d: %s\n", r, store->get_string(keys[size_t(r)]).c_str());
    }
  }
  // Nobody leaves before everyone has read: rank 0 may host the store.
  store->add("selfcheck/done", 1);
  auto dl = Deadline::after(timeout);
  while (std::stoll(store->get_string("selfcheck/done")) < env.world_size) {
    if (dl.expired()) {
      LOCKSTEP_THROW(TimeoutError, "selfcheck on rank ", env.rank,
                     ": not every worker reached the final barrier within ", timeout_s, " s");
    }
    ::usleep(2000);
  }
  if (env.rank == 0) std::printf("selfcheck: ok\n");
  return 0;
}

}  // namespace

Runner add_selfcheck_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "selfcheck",
      "Worker program that checks the distributed setup: every worker joins the store, "
      "publishes its host and pid, and rank 0 reports them. Run under `lockstep run`.");
  auto timeout_s = std::make_shared<double>(60.0);
  cmd->add_option("--timeout", *timeout_s, "seconds to wait for the other workers")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  return [timeout_s] { return selfcheck(*timeout_s); };
}

}  // namespace lockstep::apps
