// Runs N rank processes on this host: the parent serves a TcpStore on loopback, forks the
// ranks (each connects its own TcpStore client), waits for them with a deadline, and kills
// and reaps whatever is still running. Used by bench_collectives and the multi-process tests.
//
//   auto codes = run_local_ranks(4, std::chrono::seconds(60), [](int rank, int world, Store& s) {
//     auto pg = ProcessGroup::create("native", s, rank, world);
//     ... return 0; });
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "lockstep/store/tcp_store.h"
#include "lockstep/store/tcp_store_server.h"

namespace lockstep::comm::local {

using RankMain = std::function<int(int rank, int world, store::Store& store)>;
// Called in the parent with the ranks' pids once they run (to signal them, in fault tests).
using OnSpawn = std::function<void(const std::vector<pid_t>& pids)>;

inline constexpr int kTimedOut = -1000;

// Exit code of each rank (a negative signal number if killed; kTimedOut if we killed it).
// Ranks for which `must_finish(rank)` is false (e.g. one a test stopped) are killed as soon
// as every other rank has exited.
inline std::vector<int> run_local_ranks(int world, std::chrono::milliseconds timeout,
                                        const RankMain& fn, const OnSpawn& on_spawn = {},
                                        const std::function<bool(int)>& must_finish = {}) {
  store::TcpStoreServerOptions so;
  so.token = "local-ranks";
  // The server listens now but starts its thread only after the fork: a child forked while
  // another thread holds an allocator lock (the sanitizers' allocators are not fork-safe)
  // would deadlock on its first allocation. Children connect to the listening socket and
  // are answered once the thread runs.
  store::TcpStoreServer server(so);
  const uint16_t port = server.port();
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int code = 1;
      try {
        store::TcpStoreOptions co;
        co.port = port;
        co.token = "local-ranks";
        co.timeout = timeout;
        store::TcpStore store(co);
        code = fn(r, world, store);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "[rank %d] error: %s\n", r, e.what());
        code = 2;
      }
      std::fflush(stdout);
      std::fflush(stderr);
      ::_exit(code);
    }
    if (pid < 0) break;
    pids.push_back(pid);
  }
  server.start();
  if (on_spawn) on_spawn(pids);
  std::vector<int> codes(pids.size(), kTimedOut);
  std::vector<bool> done(pids.size(), false);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t left = pids.size();
  auto essential_left = [&] {
    for (size_t i = 0; i < pids.size(); ++i)
      if (!done[i] && (!must_finish || must_finish(int(i)))) return true;
    return false;
  };
  while (left > 0 && essential_left() && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int st = 0;
      if (::waitpid(pids[i], &st, WNOHANG) == pids[i]) {
        done[i] = true;
        --left;
        codes[i] = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
      }
    }
    if (left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (size_t i = 0; i < pids.size(); ++i)
    if (!done[i]) {  // stragglers: kill and reap, never leave a child behind
      ::kill(pids[i], SIGKILL);
      ::waitpid(pids[i], nullptr, 0);
    }
  return codes;
}

}  // namespace lockstep::comm::local
