// `lockstep bench collectives ...`: runs the collective benchmark programs that are built
// or installed with `lockstep` (bench/comm/bench_collectives, bench/backends/bench_backends),
// passing the flags through. `--backend all` compares every backend built in, side by side with
// native.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "help_format.h"
#include "lockstep/core/error.h"

namespace lockstep::apps {
namespace {

namespace fs = std::filesystem;

// The benchmark program `name`: in the build tree (apps/../bench/<area>/name) or installed
// with lockstep (<bindir>/LOCKSTEP_BIN_TO_BENCH/name, i.e. <prefix>/libexec/lockstep/name).
fs::path find_bench_program(const std::string& area, const std::string& name) {
  char self[PATH_MAX] = {0};
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  fs::path dir = n > 0 ? fs::path(std::string(self, size_t(n))).parent_path() : fs::path(".");
  const fs::path build_tree = dir.parent_path() / "bench" / area / name;
  const fs::path installed = (dir / LOCKSTEP_BIN_TO_BENCH / name).lexically_normal();
  for (const fs::path& p : {build_tree, installed}) {
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  LOCKSTEP_THROW(
      ConfigError, "benchmark program '", name, "' not found: neither ", installed.string(),
      " (installed with lockstep) nor ", build_tree.string(),
      " (a build tree) exists; configure lockstep with -DLOCKSTEP_BUILD_BENCH=ON (the "
      "default), build it, and run that build's lockstep or install it (cmake --install)");
}

int exec_bench(std::vector<std::string> args) {
  bool all = false;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--backend" && args[i + 1] == "all") {
      all = true;
      args.erase(args.begin() + long(i), args.begin() + long(i) + 2);
      break;
    }
  }
  fs::path prog = all ? find_bench_program("backends", "bench_backends")
                      : find_bench_program("comm", "bench_collectives");
  std::vector<char*> argv{const_cast<char*>(prog.c_str())};
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(prog.c_str(), argv.data());
  throw SystemError(errno, str_cat("cannot run ", prog.string()));
}

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto* coll = bench->add_subcommand(
      "collectives",
      "Collective benchmark in nccl-tests columns (size count type redop root, out-of-place and "
      "in-place time algbw busbw #wrong, `# Avg bus bandwidth`) with the memcpy, raw-TCP (tcp "
      "transport) and cross-core ceilings; nccl-tests' short flags and op names work (-b 8 -e 128M "
      "-f 2 -n 20 -w 5 -c 1, --op all_reduce). --backend all compares every backend built in. "
      "Peers "
      "(torch gloo, Open MPI): bench/comm/peers.sh. The flags, from the benchmark program:");
  coll->set_help_flag();  // --help goes to the program, which lists its flags
  coll->allow_extras();
  coll->prefix_command();
  return [coll] {
    const auto args = coll->remaining();
    if (std::find(args.begin(), args.end(), "--help") != args.end() ||
        std::find(args.begin(), args.end(), "-h") != args.end()) {
      std::printf("%s\n\n",
                  wrap_text(coll->get_description(), size_t(terminal_width()) - 1).c_str());
      std::fflush(stdout);
    }
    return exec_bench(args);
  };
}

}  // namespace lockstep::apps
