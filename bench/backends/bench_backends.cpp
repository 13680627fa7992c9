// bench_backends: all-reduce (or another collective) of every backend built in, side by side
// with native, in the nccl-tests columns, plus the single-core memcpy ceiling per size.
//
//   mpirun --allow-run-as-root -n 2 --mca btl self,vader bench_backends   # mpi included
//   bench_backends                 # 2 forked local ranks: native and gloo (mpi needs mpirun)
//   flags: --op allreduce|allgather|broadcast  --min-bytes 8 --max-bytes 64M --iters 20
//          --warmup 5 --backends native,gloo,mpi
// Under mpirun the ranks meet through a FileStore in /tmp (one per job); otherwise through
// the TcpStore of bench/comm/local_ranks.h. Each row is measured on the same processes, one
// backend after the other; #wrong comes from a checked run after the timed ones.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../comm/local_ranks.h"
#include "lockstep/comm/backends/registry.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/core/buffer.h"
#include "lockstep/core/error.h"
#include "lockstep/store/file_store.h"

namespace lockstep::comm {
namespace {

struct Flags {
  std::string op = "allreduce";
  size_t min_bytes = 8, max_bytes = 64u << 20;
  int iters = 20, warmup = 5;
  std::vector<std::string> backends;  // empty: every built backend that can run here
};

size_t parse_bytes(const std::string& s) {
  size_t n = std::stoull(s);
  switch (s.back()) {
    case 'K': case 'k': return n << 10;
    case 'M': case 'm': return n << 20;
    case 'G': case 'g': return n << 30;
    default: return n;
  }
}

Flags parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) LOCKSTEP_THROW(ConfigError, a, " needs a value");
      return argv[++i];
    };
    if (a == "--op") f.op = val();
    else if (a == "--min-bytes") f.min_bytes = parse_bytes(val());
    else if (a == "--max-bytes") f.max_bytes = parse_bytes(val());
    else if (a == "--iters") f.iters = std::stoi(val());
    else if (a == "--warmup") f.warmup = std::stoi(val());
    else if (a == "--backends") {
      std::string v = val();
      for (size_t p = 0; p <= v.size();) {
        size_t q = v.find(',', p);
        if (q == std::string::npos) q = v.size();
        f.backends.push_back(v.substr(p, q - p));
        p = q + 1;
      }
    } else LOCKSTEP_THROW(ConfigError, "unknown flag ", a, " (see the header of bench_backends.cpp)");
  }
  if (f.op != "allreduce" && f.op != "allgather" && f.op != "broadcast")
    LOCKSTEP_THROW(ConfigError, "--op must be allreduce, allgather or broadcast");
  return f;
}

double bus_factor(const std::string& op, int n) {
  if (op == "allreduce") return 2.0 * (n - 1) / n;
  if (op == "allgather") return double(n - 1) / n;
  return 1.0;
}

// One collective of `count` floats per rank (allgather: out holds world*count).
Work issue(ProcessGroup& pg, const std::string& op, float* in, float* out, size_t count) {
  if (op == "allreduce") return pg.allreduce(in, count, DType::f32, ReduceOp::sum);
  if (op == "allgather") return pg.allgather(in, out, count, DType::f32);
  return pg.broadcast(in, count, DType::f32, 0);
}

size_t check(const std::string& op, const float* in, const float* out, size_t count, int world) {
  size_t wrong = 0;
  const float sum = float(world * (world + 1) / 2);
  for (size_t i = 0; i < count; ++i) {
    if (op == "allreduce") wrong += in[i] != sum;
    if (op == "broadcast") wrong += in[i] != 1.0f;
  }
  if (op == "allgather")
    for (size_t i = 0; i < count * size_t(world); ++i) wrong += out[i] != float(i / count + 1);
  return wrong;
}

double memcpy_gbps(AlignedBuffer& a, AlignedBuffer& b, size_t bytes) {
  const int reps = std::max(3, int((64u << 20) / std::max<size_t>(bytes, 1)));
  std::memcpy(b.data(), a.data(), bytes);
  const auto t0 = Clock::now();
  for (int r = 0; r < reps; ++r) std::memcpy(b.data(), a.data(), bytes);
  return double(bytes) * reps / seconds_since(t0) / 1e9;
}

int rank_main(int rank, int world, store::Store& store, const Flags& f) {
  register_builtin_backends();
  std::vector<std::string> names = f.backends;
  if (names.empty())
    for (const auto& b : built_backends())
      if (backend_unavailable_reason(b, world).empty()) names.push_back(b);
  std::vector<std::unique_ptr<ProcessGroup>> groups;
  for (const auto& b : names) {
    Options o;
    o.group_name = "bench-" + b;
    o.timeout = std::chrono::seconds(120);
    groups.push_back(ProcessGroup::create(b, store, rank, world, o));
  }
  const size_t max_count = f.max_bytes / sizeof(float);
  AlignedBuffer in(max_count * sizeof(float)), out(max_count * sizeof(float) * world);
  AlignedBuffer ma(f.max_bytes), mb(f.max_bytes);
  std::memset(in.data(), 0, in.size());  // pre-fault: first touches cost ~50x here
  std::memset(out.data(), 0, out.size());
  std::memset(ma.data(), 1, ma.size());
  std::memset(mb.data(), 0, mb.size());
  float* pin = reinterpret_cast<float*>(in.data());
  float* pout = reinterpret_cast<float*>(out.data());
  if (rank == 0) {
    std::printf("# bench_backends --op %s, %d ranks, %ld cores, %.1f GiB memory, float32 sum\n",
                f.op.c_str(), world, sysconf(_SC_NPROCESSORS_ONLN),
                double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE)) / double(1 << 30));
    std::printf("%12s %10s %6s %6s %12s", "size(B)", "count", "type", "redop", "memcpy(GB/s)");
    for (const auto& b : names)
      std::printf(" | %-6s %10s %8s %8s %6s", b.c_str(), "time(us)", "algbw", "busbw", "#wrong");
    std::printf("\n");
  }
  for (size_t bytes = std::max<size_t>(f.min_bytes, 4); bytes <= f.max_bytes; bytes *= 4) {
    const size_t count = bytes / sizeof(float);
    double mc = rank == 0 ? memcpy_gbps(ma, mb, bytes) : 0;
    if (rank == 0)
      std::printf("%12zu %10zu %6s %6s %12.2f", bytes, count, "float",
                  f.op == "allreduce" ? "sum" : "none", mc);
    for (size_t g = 0; g < groups.size(); ++g) {
      ProcessGroup& pg = *groups[g];
      std::fill(pin, pin + count, 1.0f);
      for (int i = 0; i < f.warmup; ++i) issue(pg, f.op, pin, pout, count).wait();
      pg.barrier().wait();
      const auto t0 = Clock::now();
      for (int i = 0; i < f.iters; ++i) issue(pg, f.op, pin, pout, count).wait();
      const double us = seconds_since(t0) * 1e6 / f.iters;
      // Checked run: fresh inputs, then count the wrong elements on every rank.
      std::fill(pin, pin + count, float(f.op == "broadcast" ? (rank == 0 ? 1 : 0) : rank + 1));
      issue(pg, f.op, pin, pout, count).wait();
      int64_t wrong = int64_t(check(f.op, pin, pout, count, world));
      pg.allreduce(&wrong, 1, DType::i64, ReduceOp::sum).wait();
      const double algbw = double(bytes) / us / 1e3;
      if (rank == 0)
        std::printf(" | %-6s %10.1f %8.2f %8.2f %6lld", "", us, algbw,
                    algbw * bus_factor(f.op, world), static_cast<long long>(wrong));
    }
    if (rank == 0) {
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace lockstep::comm

int main(int argc, char** argv) {
  using namespace lockstep;
  try {
    const comm::Flags f = comm::parse(argc, argv);
    if (const char* size = std::getenv("OMPI_COMM_WORLD_SIZE")) {
      const int world = std::atoi(size), rank = std::atoi(std::getenv("OMPI_COMM_WORLD_RANK"));
      // One store file per job: the ranks of one mpirun share their parent (orted/mpirun).
      const std::string path = str_cat("/tmp/lockstep_bench_backends_", getppid(), ".store");
      int code;
      {
        store::FileStore store(path, std::chrono::seconds(120));
        code = comm::rank_main(rank, world, store, f);
        store.set(str_cat("left/", rank), std::string_view("1"));
        if (rank == 0) {  // the file goes only once every rank is done with it
          std::vector<std::string> keys;
          for (int r = 0; r < world; ++r) keys.push_back(str_cat("left/", r));
          store.wait(keys, std::chrono::seconds(60));
        }
      }
      if (rank == 0) ::unlink(path.c_str());
      return code;
    }
    std::printf("# not under mpirun: 2 forked ranks, mpi skipped (run under mpirun -n 2 for it)\n");
    std::fflush(stdout);
    auto codes = comm::local::run_local_ranks(2, std::chrono::minutes(10),
                                              [&](int rank, int world, store::Store& s) {
                                                return comm::rank_main(rank, world, s, f);
                                              });
    for (int c : codes)
      if (c != 0) return 1;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_backends: %s\n", e.what());
    return 1;
  }
}
