// `lockstep plan`: how far a model scales. From a step profile (`lockstep train --profile`)
// or a built-in model, a topology (nodes x workers per node, link bandwidths and latencies
// given or calibrated) and an all-reduce algorithm, the alpha-beta cost model (plan/) predicts
// step time, exposed communication, weak-scaling efficiency and the best bucket size for each
// node count. `lockstep plan calibrate` fits a link's alpha and beta to an all-reduce benchmark.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "lockstep/core/error.h"
#include "lockstep/plan/calibrate.h"
#include "lockstep/plan/predict.h"
#include "plan_output.h"

namespace lockstep::apps {
namespace {

struct LinkFlags {
  double gbit = 0, latency_us = 0;
  std::string calibration;
};

struct PlanFlags {
  std::string profile, model, out, algo = "ring", nodes = "1,2,4,8,16,32,64,128,256,512,1024";
  double compute_ms = 0, tflops = 125, grad_bytes = 4, bucket_mb = 25;
  int per_node = 1;
  bool own_compute = false, json = false;
  LinkFlags intra, inter;
};

struct CalibrateFlags {
  std::string bench, transport = "shm", out;
  int world = 2;
};

void add_link_flags(CLI::App* cmd, LinkFlags& l, const std::string& kind) {
  cmd->add_option("--" + kind + "-gbit", l.gbit, kind + "-node bandwidth, Gbit/s");
  cmd->add_option("--" + kind + "-latency-us", l.latency_us,
                  kind + "-node latency per message, microseconds");
  cmd->add_option("--" + kind + "-calibration", l.calibration,
                  "a `lockstep plan calibrate` file for the " + kind +
                      "-node link (instead of the two above)")
      ->check(CLI::ExistingFile);
}

// A link from its flags; `needed` false (an unused link) leaves it empty.
plan::Link link_of(const LinkFlags& l, const std::string& kind, bool needed) {
  if (!l.calibration.empty()) return plan::load_calibration(l.calibration).link;
  if (!needed) return {};
  if (l.gbit == 0 && l.latency_us == 0)
    LOCKSTEP_THROW(ConfigError, "lockstep plan: give --", kind, "-gbit and --", kind,
                   "-latency-us, or --", kind,
                   "-calibration FILE (from `lockstep plan calibrate`)");
  return {l.latency_us * 1e-6, l.gbit * 1e9 / 8};
}

std::vector<int> parse_nodes(const std::string& text) {
  std::vector<int> v;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      v.push_back(std::stoi(item));
    } catch (const std::exception&) {
      v.push_back(0);
    }
    if (v.back() < 1 || v.back() > (1 << 20))
      LOCKSTEP_THROW(ConfigError, "lockstep plan: --nodes '", text, "': '", item,
                     "' is not a node count in [1, 2^20]");
  }
  if (v.empty())
    LOCKSTEP_THROW(ConfigError, "lockstep plan: --nodes is empty; e.g. --nodes 1,2,4,8");
  return v;
}

PlanInputs inputs_of(const PlanFlags& f) {
  PlanInputs in;
  in.bucket_cap = f.bucket_mb * (1 << 20);
  if (!(in.bucket_cap > 0))
    LOCKSTEP_THROW(ConfigError, "lockstep plan: --bucket-mb ", f.bucket_mb, " must be positive");
  if (!f.profile.empty()) {
    in.profile = plan::load_profile(f.profile);
    in.profile_origin = f.profile;
    plan::check_profile_model(in.profile, f.model, "the profile " + f.profile);
  } else if (!f.model.empty()) {
    if (!(f.tflops > 0))
      LOCKSTEP_THROW(ConfigError, "lockstep plan: --tflops ", f.tflops, " must be positive");
    in.profile = plan::builtin_profile(f.model, f.compute_ms * 1e-3, f.tflops * 1e12, f.grad_bytes,
                                       in.bucket_cap);
    in.profile_origin = "built-in";
  } else {
    LOCKSTEP_THROW(ConfigError,
                   "lockstep plan: give --profile FILE (from `lockstep train --profile FILE`) or "
                   "--model gpt-25m|gpt-350m|gpt-1.3b");
  }
  in.algo = plan::parse_algo(f.algo);
  in.topo.per_node = f.per_node;
  const std::vector<int> nodes = parse_nodes(f.nodes);
  const int max_nodes = *std::max_element(nodes.begin(), nodes.end());
  in.topo.nodes = max_nodes;
  in.topo.intra = link_of(f.intra, "intra", f.per_node > 1);
  in.topo.inter = link_of(f.inter, "inter", max_nodes > 1);
  plan::check_topology(in.topo, "lockstep plan (--intra-*/--inter-* flags)");
  plan::check_profile_fits(in.profile, in.topo, f.own_compute);
  return in;
}

int run_plan(const PlanFlags& f) {
  const PlanInputs in = inputs_of(f);
  const std::vector<plan::Row> rows =
      plan::sweep(in.profile, in.topo, in.algo, in.bucket_cap, parse_nodes(f.nodes));
  if (f.json) {
    std::printf("%s\n", plan_json(in, rows).c_str());
  } else {
    print_plan_table(stdout, in, rows);
  }
  if (f.out.empty()) return 0;
  std::string err;
  const auto plot = write_plan_files(f.out, in, rows, err);
  std::fprintf(f.json ? stderr : stdout, "plan: %s/plan.md\n", f.out.c_str());
  if (!plot.empty()) std::fprintf(f.json ? stderr : stdout, "plot: %s\n", plot.c_str());
  if (!err.empty()) std::fprintf(stderr, "lockstep plan: plot not drawn: %s\n", err.c_str());
  return 0;
}

// The all-reduce table of this machine's own benchmark, ring forced, 4 KiB to 64 MiB.
std::string run_bench(const CalibrateFlags& f) {
  if (f.transport != "shm" && f.transport != "tcp")
    LOCKSTEP_THROW(ConfigError, "lockstep plan calibrate: --transport '", f.transport,
                   "': use shm or tcp, or "
                   "--bench FILE with a benchmark's output");
  const std::string cmd = "LOCKSTEP_ALGO=ring timeout 600 /proc/" + std::to_string(::getpid()) +
                          "/exe bench collectives --op allreduce --transport " + f.transport +
                          " --nproc " + std::to_string(f.world) +
                          " --min-bytes 4K --max-bytes 64M 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw SystemError(errno, "lockstep plan calibrate: cannot run the benchmark");
  std::string text;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
  if (::pclose(p) != 0)
    LOCKSTEP_THROW(Error, "lockstep plan calibrate: the benchmark failed:\n", text);
  std::fputs(text.c_str(), stdout);
  return text;
}

int run_calibrate(const CalibrateFlags& f) {
  std::string text;
  if (!f.bench.empty()) {
    std::ifstream in(f.bench);
    if (!in) LOCKSTEP_THROW(DataError, "lockstep plan calibrate: cannot read --bench ", f.bench);
    text.assign(std::istreambuf_iterator<char>(in), {});
  } else {
    text = run_bench(f);
  }
  const plan::Calibration c =
      plan::fit_ring(plan::parse_bench_table(text, f.bench.empty() ? "the benchmark" : f.bench),
                     f.world, f.transport);
  std::printf(
      "calibration: %s, %d ranks: alpha %.2f us, beta %.3f GB/s (%.3g Gbit/s); worst fit error "
      "%.0f %% "
      "over %zu sizes\n",
      c.transport.c_str(), c.world, c.link.alpha * 1e6, c.link.beta * 1e-9, c.link.beta * 8e-9,
      100 * c.max_rel_error, c.samples.size());
  if (!f.out.empty()) {
    std::ofstream o(f.out, std::ios::trunc);
    o << c.to_json().dump(1) << "\n";
    if (!o.flush()) LOCKSTEP_THROW(DataError, "lockstep plan calibrate: cannot write ", f.out);
  }
  return 0;
}

}  // namespace

Runner add_plan_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("plan",
                         "Predict how a model scales (alpha-beta cost model, docs/scaling.md):\n"
                         "  lockstep plan --profile P.json --inter-gbit 100 --inter-latency-us 5 "
                         "[--per-node 8 --intra-gbit ...]\n"
                         "  lockstep plan --model gpt-350m --per-node 8 --intra-gbit 2400 "
                         "--intra-latency-us 3 --inter-gbit 400 ...\n"
                         "  lockstep plan calibrate --transport shm|tcp [--nproc 2] [--out "
                         "link.json] | --bench TABLE.txt --world P\n"
                         "Prints, per node count, step time, communication (all buckets), exposed "
                         "communication, the share "
                         "hidden behind backward, weak-scaling efficiency, and the best bucket "
                         "cap; --out DIR also writes "
                         "plan.md, plan.dat and an efficiency plot.");
  cmd->require_subcommand(0, 1);
  auto f = std::make_shared<PlanFlags>();
  cmd->add_option("--profile", f->profile, "step profile from `lockstep train --profile FILE`")
      ->check(CLI::ExistingFile);
  cmd->add_option("--model", f->model,
                  "a built-in model (gpt-25m, gpt-350m, gpt-1.3b); with --profile, the model the "
                  "profile must be of");
  cmd->add_option("--compute-ms", f->compute_ms,
                  "built-in model: forward + backward per step (default: from FLOPs)");
  cmd->add_option("--tflops", f->tflops,
                  "built-in model: sustained TFLOP/s per worker (default 125)");
  cmd->add_option("--grad-bytes", f->grad_bytes,
                  "built-in model: bytes per gradient element (default 4)");
  cmd->add_option("--nodes", f->nodes, "node counts, comma-separated (default 1,2,4,...,1024)");
  cmd->add_option("--per-node", f->per_node, "workers per node (default 1)");
  cmd->add_option(
      "--algo", f->algo,
      "ring, hd (halving-doubling), doubling, hier (hierarchical), auto (native's choice)");
  cmd->add_option("--bucket-mb", f->bucket_mb, "bucket cap, MiB (default 25, as DDP)");
  add_link_flags(cmd, f->intra, "intra");
  add_link_flags(cmd, f->inter, "inter");
  cmd->add_flag("--own-compute", f->own_compute,
                "each worker has its own cores or accelerator (allows more workers per node than "
                "the profile had)");
  cmd->add_flag("--json", f->json, "print the rows as JSON");
  cmd->add_option("--out", f->out, "directory for plan.md, plan.dat and the efficiency plot");
  auto* cal = cmd->add_subcommand("calibrate",
                                  "fit alpha and beta of a transport to an all-reduce benchmark");
  auto c = std::make_shared<CalibrateFlags>();
  cal->add_option("--bench", c->bench,
                  "output of `LOCKSTEP_ALGO=ring lockstep bench collectives --op allreduce`")
      ->check(CLI::ExistingFile);
  cal->add_option("--transport", c->transport,
                  "shm or tcp (runs the benchmark), or a label for --bench");
  cal->add_option("--nproc,--world", c->world, "ranks of the benchmark (default 2)")
      ->check(CLI::Range(2, 1024));
  cal->add_option("--out", c->out,
                  "write the calibration (JSON) here, for --intra-/--inter-calibration");
  return [f, c, cal] { return cal->parsed() ? run_calibrate(*c) : run_plan(*f); };
}

}  // namespace lockstep::apps
