// bench_collectives: nccl-tests style table for lockstep's collectives, with N local rank
// processes it spawns itself (rendezvous through a TcpStore served by the parent), or as one
// rank of a job a launcher started (RANK set: `lockstep run ... -- bench_collectives ...`,
// e.g. across network namespaces, bench/comm/netns_tcp.sh).
//
//   bench_collectives --backend native --transport shm --op allreduce --nproc 2
//       --min-bytes 8 --max-bytes 256M --dtype float32 --iters 20
//   bench_collectives --op all_reduce_perf -b 8 -e 256M -f 2 -n 20 -w 3 -c 1   (nccl-tests' words)
// and closing "# Out of bounds values" and "# Avg bus bandwidth" lines.
//
// Columns as nccl-tests prints them: size(B) count type redop root, out-of-place and in-place
// time(us) algbw(GB/s) busbw(GB/s) #wrong (N/A for the form the op has no API for), then the
// ceilings for the same size: the single-core memcpy bandwidth (what ranks sharing the memory
// bus can move), one TCP stream between ranks 0 and 1 (tcp transport), and the cross-core
// read bandwidth: rank 0 copying out a buffer that rank 1 has just written, through shared
// memory. Each of two ranks must read at least a whole buffer's worth of bytes the other
// wrote, so a 2-rank all-reduce's algbw cannot pass that rate; where the data stays in the
// caches it is far below memcpy's.
// Per size: warm-up of at least --warmup operations and --warmup-ms, then the best of --reps
// batches, each at least --batch-ms long (the slowest rank's time counts). The peers' scripts
// in bench/comm time the same way. Spawned ranks are bound to CPUs as `lockstep run` binds
// its workers (--cpu-bind, LOCKSTEP_CPU_BIND; default auto), and as mpirun binds Open MPI's.
// --shared-buffers takes the buffers from ProcessGroup::alloc_shared (like nccl-tests' -R,
// registered buffers): the shared-memory all-reduce, reduce-scatter and all-gather then need
// no staging copies.
#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "local_ranks.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/comm/shm/segment.h"
#include "lockstep/comm/tcp/socket.h"
#include "lockstep/core/buffer.h"
#include "lockstep/launch/affinity.h"
#include "lockstep/core/dist_env.h"
#include "lockstep/store/rendezvous.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

struct Flags {
  std::string backend = "native", transport = "shm", op = "allreduce", redop = "sum";
  int nproc = 2, iters = 20, warmup = 3, factor = 2, reps = 5;
  // Warm-up lasts at least this long and every timed batch at least batch_ms (a point taken
  // right after the previous size's ceilings ran on rank 0 alone, or over a 2 ms batch, sees
  // the peer's core still waking up: the same size measured 7.6 and 19 GB/s in one minute).
  double warmup_ms = 20, batch_ms = 10;
  size_t min_bytes = 8, max_bytes = 256u << 20;
  DType dtype = DType::f32;
  int timeout_s = 300;
  std::string cpu_bind;  // "" = LOCKSTEP_CPU_BIND, then auto
  bool shared_buffers = false;  // the operation's buffers from ProcessGroup::alloc_shared
  bool check = true;            // count wrong results (nccl-tests -c)
};

const char* const kOps[] = {"allreduce", "broadcast", "reduce", "allgather", "reduce_scatter", "alltoall", "barrier"};

// nccl-tests' names too: all_reduce, all_reduce_perf, all_gather, reduce_scatter_perf, ...
std::string op_name(std::string op) {
  if (op.size() > 5 && op.compare(op.size() - 5, 5, "_perf") == 0) op.resize(op.size() - 5);
  if (op == "all_reduce") return "allreduce";
  if (op == "all_gather") return "allgather";
  if (op == "reducescatter") return "reduce_scatter";
  if (op == "all_to_all") return "alltoall";
  return op;
}

// The type as nccl-tests prints it.
const char* nccl_type_name(DType t) {
  switch (t) {
    case DType::f32: return "float";
    case DType::f64: return "double";
    case DType::f16: return "half";
    case DType::bf16: return "bfloat16";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
  }
  return "?";
}

bool reduces(const std::string& op) { return op == "allreduce" || op == "reduce" || op == "reduce_scatter"; }
// lockstep's all-reduce, broadcast and reduce work in place; all-gather, reduce-scatter and
// all-to-all from one buffer into another. The other form has no API to time.
bool in_place(const std::string& op) { return op == "allreduce" || op == "broadcast" || op == "reduce" || op == "barrier"; }

size_t parse_size(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  switch (end && *end ? std::toupper(*end) : 0) {
    case 'K': v *= 1024; break;
    case 'M': v *= 1024 * 1024; break;
    case 'G': v *= 1024.0 * 1024 * 1024; break;
    case 0: break;
    default: LOCKSTEP_THROW(ConfigError, "bad size '", s, "' (use e.g. 8, 64K, 256M, 1G)");
  }
  return size_t(v);
}

void print_usage(FILE* to) {
  std::fprintf(to,
               "usage: bench_collectives [--backend native] [--transport shm|tcp|auto]\n"
               "  [--op allreduce|broadcast|reduce|allgather|reduce_scatter|alltoall|barrier]\n"
               "     (also nccl-tests' all_reduce, all_gather, ..., all_reduce_perf, ...)\n"
               "  [--nproc N] [-b|--min-bytes 8] [-e|--max-bytes 256M] [-f|--step-factor 2]\n"
               "  [-d|--dtype float] [-o|--redop sum] [-n|--iters 20] [-w|--warmup 3] [-c|--check 1]\n"
               "  [--reps 5] [--timeout 300] [--warmup-ms 20] [--batch-ms 10]\n"
               "  [--cpu-bind auto|none|cores] [--shared-buffers]\n"
               "Sizes take K, M, G. Types: float double half bfloat16 int32 int64 uint8 (or f32 ...).\n");
}

[[noreturn]] void usage(const std::string& why = "") {
  if (!why.empty()) std::fprintf(stderr, "bench_collectives: %s\n", why.c_str());
  print_usage(stderr);
  std::exit(2);
}

// Every value checked here, before the header is printed.
Flags parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    auto num = [&]() {
      const std::string v = val();
      try {
        return std::stoi(v);
      } catch (const std::exception&) {
        usage(a + " " + v + ": not a number");
      }
    };
    if (a == "-h" || a == "--help") {
      print_usage(stdout);
      std::exit(0);
    } else if (a == "--backend") f.backend = val();
    else if (a == "--transport") f.transport = val();
    else if (a == "--op") f.op = op_name(val());
    else if (a == "--redop" || a == "-o") f.redop = val();
    else if (a == "--nproc") f.nproc = num();
    else if (a == "--iters" || a == "-n") f.iters = num();
    else if (a == "--warmup" || a == "-w") f.warmup = num();
    else if (a == "--check" || a == "-c") f.check = num() != 0;
    else if (a == "--reps") f.reps = std::max(1, num());
    else if (a == "--warmup-ms") f.warmup_ms = std::stod(val());
    else if (a == "--batch-ms") f.batch_ms = std::stod(val());
    else if (a == "--step-factor" || a == "-f") f.factor = num();
    else if (a == "--min-bytes" || a == "-b") f.min_bytes = parse_size(val());
    else if (a == "--max-bytes" || a == "-e") f.max_bytes = parse_size(val());
    else if (a == "--timeout") f.timeout_s = num();
    else if (a == "--cpu-bind") f.cpu_bind = val();
    else if (a == "--shared-buffers") f.shared_buffers = true;
    else if (a == "--dtype" || a == "-d") {
      const std::string v = val();
      auto d = parse_dtype(v);
      if (!d) usage("unknown type " + v);
      f.dtype = *d;
    } else usage("unknown option " + a);
  }
  if (std::find(std::begin(kOps), std::end(kOps), f.op) == std::end(kOps)) usage("unknown --op " + f.op);
  if (!parse_reduce_op(f.redop)) usage("unknown --redop " + f.redop);
  if (f.nproc < 1 || f.factor < 2 || f.min_bytes > f.max_bytes || f.iters < 1)
    usage("need --nproc >= 1, --step-factor >= 2, --iters >= 1 and --min-bytes <= --max-bytes");
  return f;
}

// nccl-tests bus bandwidth factors (BENCHMARKS.md).
double bus_factor(const std::string& op, int n) {
  if (op == "allreduce") return 2.0 * (n - 1) / n;
  if (op == "allgather" || op == "reduce_scatter" || op == "alltoall") return double(n - 1) / n;
  return 1.0;
}

// Elements per rank of the op's input/output for a "size" in nccl-tests terms (total bytes
// of the largest buffer: allgather/reduce_scatter/alltoall count size as the whole array).
size_t count_for(const Flags& f, size_t bytes, int n) {
  size_t c = bytes / dtype_size(f.dtype);
  if (f.op == "allgather" || f.op == "reduce_scatter" || f.op == "alltoall") c /= size_t(n);
  return c;
}

double memcpy_gbps(AlignedBuffer& a, AlignedBuffer& b, size_t bytes) {
  if (bytes == 0) return 0;
  int reps = int(std::clamp<size_t>((64u << 20) / bytes, 3, 2000));
  std::memcpy(b.data(), a.data(), bytes);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) {
    std::memcpy(b.data(), a.data(), bytes);
    asm volatile("" ::: "memory");
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  return double(bytes) / s / 1e9;
}

// Raw TCP between ranks 0 and 1 over the address the tcp transport would bind: the socket
// ceiling printed beside the tcp transport's figures.
struct RawTcp {
  tcp::Fd fd;
  static RawTcp connect(store::Store& store, int rank) {
    RawTcp r;
    const Deadline dl = Deadline::after(std::chrono::seconds(30));
    if (rank == 0) {
      auto [listener, addr] = tcp::listen_any_port(tcp::choose_bind_address(), 1);
      store.set("bench/rawtcp", addr);
      r.fd = tcp::accept_one(listener.get(), dl);
    } else if (rank == 1) {
      r.fd = tcp::connect_to(store::to_string(store.get("bench/rawtcp", std::chrono::seconds(30))), dl);
    }
    return r;
  }
  // Rank 0 streams `bytes` `reps` times, rank 1 acknowledges; GB/s on rank 0.
  double gbps(int rank, std::byte* buf, size_t bytes) {
    if (bytes == 0 || !fd.valid()) return 0;
    const int reps = int(std::clamp<size_t>((256u << 20) / bytes, 2, 200));
    const Deadline dl = Deadline::after(std::chrono::seconds(60));
    char ack = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) {
      if (rank == 0) tcp::write_all(fd.get(), buf, bytes, dl, "raw tcp");
      else tcp::read_all(fd.get(), buf, bytes, dl, "raw tcp");
    }
    if (rank == 1) tcp::write_all(fd.get(), &ack, 1, dl, "raw tcp ack");
    else tcp::read_all(fd.get(), &ack, 1, dl, "raw tcp ack");
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return double(bytes) * reps / s / 1e9;
  }
};

// Cross-core read bandwidth between ranks 0 and 1 of one host: per repetition rank 1 copies
// `bytes` from its private buffer into a shared one (so the lines sit modified in its core's
// caches), then rank 0 copies them out; GB/s of rank 0's copies on rank 0.
struct CrossCore {
  std::unique_ptr<shm::ShmSegment> seg;  // [flag line][pad to 4096][data]
  uint64_t seq = 0;                      // hand-overs so far (the same count on both ranks)
  static constexpr size_t kData = 4096;

  std::atomic<uint64_t>& flag() { return *reinterpret_cast<std::atomic<uint64_t>*>(seg->data()); }
  void await(uint64_t v, const Deadline& dl) {
    while (flag().load(std::memory_order_acquire) != v)
      if (dl.expired()) LOCKSTEP_THROW(TimeoutError, "bench_collectives: cross-core ceiling: the peer rank did not hand over");
  }
  double gbps(int rank, std::byte* buf, size_t bytes) {
    if (bytes == 0 || !seg || rank > 1) return 0;
    const int reps = int(std::clamp<size_t>((64u << 20) / bytes, 3, 2000));
    const Deadline dl = Deadline::after(std::chrono::seconds(60));
    std::byte* shared = seg->data() + kData;
    double s = 0;
    for (int i = 0; i < reps; ++i, seq += 2) {
      if (rank == 1) {
        await(seq, dl);
        std::memcpy(shared, buf, bytes);
        flag().store(seq + 1, std::memory_order_release);
      } else {
        await(seq + 1, dl);
        auto t0 = std::chrono::steady_clock::now();
        std::memcpy(buf, shared, bytes);
        asm volatile("" ::: "memory");
        s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        flag().store(seq + 2, std::memory_order_release);
      }
    }
    if (rank == 1) await(seq, dl);  // rank 0 is done reading
    return rank == 0 ? double(bytes) * reps / s / 1e9 : 0;
  }
};

struct Bufs {
  AlignedBuffer plain_in, plain_out, a, b;
  std::shared_ptr<std::byte[]> shared_in, shared_out;  // with --shared-buffers
  std::byte* in() { return shared_in ? shared_in.get() : plain_in.data(); }
  std::byte* out() { return shared_out ? shared_out.get() : plain_out.data(); }
};

Work issue(ProcessGroup& pg, const Flags& f, Bufs& bufs, size_t count, ReduceOp op) {
  void* in = bufs.in();
  void* out = bufs.out();
  if (f.op == "allreduce") return pg.allreduce(in, count, f.dtype, op);
  if (f.op == "broadcast") return pg.broadcast(in, count, f.dtype, 0);
  if (f.op == "reduce") return pg.reduce(in, count, f.dtype, op, 0);
  if (f.op == "allgather") return pg.allgather(in, out, count, f.dtype);
  if (f.op == "reduce_scatter") return pg.reduce_scatter(in, out, count, f.dtype, op);
  if (f.op == "alltoall") return pg.alltoall(in, out, count, f.dtype);
  if (f.op == "barrier") return pg.barrier();
  LOCKSTEP_THROW(ConfigError, "unknown --op ", f.op);
}

// Fills inputs with rank-dependent small integers, runs the op once and counts elements that
// differ from the expected result (summed over ranks).
int64_t check(ProcessGroup& pg, const Flags& f, Bufs& bufs, size_t count, ReduceOp op) {
  const int P = pg.size(), me = pg.rank();
  const size_t in_count = f.op == "reduce_scatter" || f.op == "alltoall" ? count * P : count;
  for (size_t i = 0; i < in_count; ++i) store_from_double(bufs.in(), f.dtype, i, double((me + i) % 4));
  issue(pg, f, bufs, count, op).wait();
  int64_t wrong = 0;
  auto expect_sum = [&](size_t i) {  // sum over ranks of (r + i) % 4
    double s = 0;
    for (int r = 0; r < P; ++r) s += double((r + i) % 4);
    return op == ReduceOp::avg ? s / P : s;
  };
  auto bad = [&](const void* buf, size_t i, double want) {
    double got = load_as_double(buf, f.dtype, i);
    return std::abs(got - want) > 1e-2 * std::max(1.0, std::abs(want));
  };
  if (f.op == "allreduce" || (f.op == "reduce" && me == 0)) {
    if (op == ReduceOp::sum || op == ReduceOp::avg)
      for (size_t i = 0; i < count; ++i) wrong += bad(bufs.in(), i, expect_sum(i));
  } else if (f.op == "broadcast") {
    for (size_t i = 0; i < count; ++i) wrong += bad(bufs.in(), i, double(i % 4));
  } else if (f.op == "allgather") {
    for (int r = 0; r < P; ++r)
      for (size_t i = 0; i < count; ++i) wrong += bad(bufs.out(), r * count + i, double((r + i) % 4));
  } else if (f.op == "reduce_scatter" && op == ReduceOp::sum) {
    for (size_t i = 0; i < count; ++i) wrong += bad(bufs.out(), i, expect_sum(me * count + i));
  } else if (f.op == "alltoall") {
    for (int r = 0; r < P; ++r)
      for (size_t i = 0; i < count; ++i)
        wrong += bad(bufs.out(), r * count + i, double((r + me * count + i) % 4));
  }
  pg.allreduce(&wrong, 1, DType::i64, ReduceOp::sum).wait();
  return wrong;
}

// The nccl-tests table: size, count, type, redop, root, then out-of-place and in-place
// columns (time, algbw, busbw, #wrong; "N/A" for the form lockstep's API does not have),
// then the ceilings for the same size (rawtcp on the tcp transport only).
void print_header(const Flags& f) {
  const bool tcp = f.transport == "tcp";
  std::printf("#%48s %35s %35s %s\n", "", "out-of-place", "in-place", "ceilings (same size)");
  std::printf("#%11s %12s %8s %6s %6s %8s %8s %8s %8s %8s %8s %8s %8s %12s%s %12s\n", "size", "count", "type",
              "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong", "memcpy",
              tcp ? "       rawtcp" : "", "xcore");
  std::printf("#%11s %12s %8s %6s %6s %8s %8s %8s %8s %8s %8s %8s %8s %12s%s %12s\n", "(B)", "(elements)", "", "",
              "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "", "(GB/s)", tcp ? "       (GB/s)" : "",
              "(GB/s)");
}

struct Row {
  size_t bytes, count;
  double us;
  int64_t wrong;  // -1: not checked (-c 0)
  double memcpy_gbps, tcp_gbps, xcore_gbps;
};
struct Totals {
  double busbw_sum = 0;
  int rows = 0;
  int64_t wrong = 0;
};

void print_row(const Flags& f, int world, const Row& r, Totals& t) {
  const double algbw = double(r.bytes) / r.us / 1e3, busbw = algbw * bus_factor(f.op, world);
  char measured[64], wrong[16];
  std::snprintf(wrong, sizeof wrong, r.wrong < 0 ? "N/A" : "%lld", (long long)r.wrong);
  std::snprintf(measured, sizeof measured, "%8.2f %8.3f %8.3f %8s", r.us, algbw, busbw, wrong);
  const char* none = "     N/A      N/A      N/A      N/A";
  const bool root = f.op == "broadcast" || f.op == "reduce";
  char tcp[16] = "";
  if (f.transport == "tcp") std::snprintf(tcp, sizeof tcp, " %12.3f", r.tcp_gbps);
  std::printf("%12zu %12zu %8s %6s %6d %s %s %12.3f%s %12.3f\n", r.bytes, r.count, nccl_type_name(f.dtype),
              reduces(f.op) ? f.redop.c_str() : "none", root ? 0 : -1, in_place(f.op) ? none : measured,
              in_place(f.op) ? measured : none, r.memcpy_gbps, tcp, r.xcore_gbps);
  std::fflush(stdout);
  t.busbw_sum += busbw;
  t.rows += 1;
  t.wrong += std::max<int64_t>(r.wrong, 0);
}

// nccl-tests' closing lines.
void print_totals(const Flags& f, const Totals& t) {
  if (f.check) std::printf("# Out of bounds values : %lld %s\n", (long long)t.wrong, t.wrong == 0 ? "OK" : "FAILED");
  std::printf("# Avg bus bandwidth    : %g \n#\n", t.rows > 0 ? t.busbw_sum / t.rows : 0.0);
  std::fflush(stdout);
}

// local: every rank runs on this host (spawned here), so they can share memory.
int rank_main(const Flags& f, int rank, int world, store::Store& store, bool local) {
  Options o;
  o.transport = f.transport;
  o.timeout = std::chrono::seconds(f.timeout_s);
  auto pg = ProcessGroup::create(f.backend, store, rank, world, o);
  auto op = parse_reduce_op(f.redop);
  if (!op) LOCKSTEP_THROW(ConfigError, "unknown --redop ", f.redop);
  Bufs bufs;
  const size_t maxb = f.max_bytes + 4096;
  if (f.shared_buffers) {  // pre-faulted and zeroed like the plain ones
    bufs.shared_in = pg->alloc_shared(maxb);
    bufs.shared_out = pg->alloc_shared(maxb);
  } else {
    bufs.plain_in.reserve(maxb, true);
    bufs.plain_out.reserve(maxb, true);
  }
  RawTcp raw;
  if (f.transport == "tcp" && world > 1) raw = RawTcp::connect(store, rank);
  CrossCore xcore;
  if (local && world > 1)
    xcore.seg = std::make_unique<shm::ShmSegment>(store, "bench/xcore", rank, world,
                                                  CrossCore::kData + maxb, o.timeout);
  if (rank == 0) {
    bufs.a.reserve(maxb, true);
    bufs.b.reserve(maxb, true);
    print_header(f);
  }
  Totals totals;
  for (size_t bytes = f.min_bytes; bytes <= f.max_bytes; bytes *= size_t(f.factor)) {
    const size_t count = count_for(f, bytes, world);
    const size_t sz = count * dtype_size(f.dtype) *
                      (f.op == "allgather" || f.op == "reduce_scatter" || f.op == "alltoall" ? world : 1);
    // Warm-up: at least f.warmup iterations and f.warmup_ms, in doubling batches; the slowest
    // rank's clock decides, so every rank runs the same number of operations.
    auto timed_batch_us = [&](int n) {  // the slowest rank's time for n operations
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) issue(*pg, f, bufs, count, *op).wait();
      double t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      pg->allreduce(&t, 1, DType::f64, ReduceOp::max).wait();
      return t;
    };
    int warm = 0;
    double warm_us = 0;
    while (warm < f.warmup || warm_us < f.warmup_ms * 1e3) {
      const int n = std::max({1, f.warmup, warm});
      warm_us += timed_batch_us(n);
      warm += n;
    }
    // Iterations per batch: fewer for big sizes (each point around a second at most), but
    // every batch lasts at least f.batch_ms.
    const size_t by_size = std::clamp<size_t>((size_t(1) << 30) / std::max<size_t>(bytes, 1) / 8 /
                                                  size_t(f.reps), 2, size_t(f.iters) * 50);
    const double per_op_us = warm_us / warm;
    const int iters = int(std::max<size_t>(by_size, std::min<size_t>(size_t(f.batch_ms * 1e3 / per_op_us) + 1, 1'000'000)));
    // The machine is shared and noisy: time `reps` batches and keep the best batch average
    // (the same rule as peers.sh applies to its peers).
    double us = 1e300;
    for (int rep = 0; rep < f.reps; ++rep) {
      pg->barrier().wait();
      us = std::min(us, timed_batch_us(iters) / iters);  // the slowest rank counts
    }
    const int64_t wrong = f.check ? check(*pg, f, bufs, count, *op) : -1;
    pg->barrier().wait();
    double mc = rank == 0 ? memcpy_gbps(bufs.a, bufs.b, sz) : 0;
    pg->barrier().wait();
    double tcp_ceiling = rank <= 1 ? raw.gbps(rank, bufs.out(), sz) : 0;
    pg->barrier().wait();
    double xc = xcore.gbps(rank, rank == 0 ? bufs.out() : bufs.in(), sz);
    pg->barrier().wait();
    if (rank == 0) print_row(f, world, {sz, count, us, wrong, mc, tcp_ceiling, xc}, totals);
  }
  if (rank == 0) print_totals(f, totals);
  return 0;
}

}  // namespace
}  // namespace lockstep::comm

int main(int argc, char** argv) {
  using namespace lockstep::comm;
  Flags f = parse(argc, argv);
  std::string cmd;
  for (int i = 0; i < argc; ++i) cmd += std::string(i ? " " : "") + argv[i];
  utsname u{};
  ::uname(&u);
  std::printf("# %s\n# machine: %s, %ld cores, %.1f GiB; backend %s, transport %s, op %s, nproc %d\n",
              cmd.c_str(), u.nodename, ::sysconf(_SC_NPROCESSORS_ONLN),
              double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE)) / (1 << 30),
              f.backend.c_str(), f.transport.c_str(), f.op.c_str(), f.nproc);
  if (!std::getenv("RANK"))
    std::printf("# cpu binding: %s\n", lockstep::launch::resolve_cpu_bind(f.cpu_bind).c_str());
  if (f.shared_buffers)
    std::printf("# buffers: ProcessGroup::alloc_shared (all-reduce, reduce-scatter and all-gather read straight from the peers' buffers)\n");
  if (std::getenv("RANK")) {  // one rank of a launched job: the launcher's store, no spawning
    const lockstep::DistEnv env = lockstep::read_dist_env();
    auto store = lockstep::store::connect_store(env, std::chrono::seconds(f.timeout_s));
    return rank_main(f, env.rank, env.world_size, *store, false);
  }
  const auto slices = lockstep::launch::cpu_partition(lockstep::launch::resolve_cpu_bind(f.cpu_bind), f.nproc,
                                                      lockstep::launch::allowed_cpus());
  auto codes = local::run_local_ranks(
      f.nproc, std::chrono::seconds(f.timeout_s), [&](int rank, int world, lockstep::store::Store& s) {
        if (!slices.empty()) {
          cpu_set_t set;
          CPU_ZERO(&set);
          for (int c : slices[size_t(rank)]) CPU_SET(c, &set);
          if (::sched_setaffinity(0, sizeof set, &set) != 0)
            LOCKSTEP_THROW(lockstep::ConfigError, "bench_collectives: rank ", rank, " cannot be bound to CPUs ",
                           lockstep::launch::cpu_list(slices[size_t(rank)]), "; use --cpu-bind none");
        }
        return rank_main(f, rank, world, s, true);
      });
  int rc = 0;
  for (size_t r = 0; r < codes.size(); ++r)
    if (codes[r] != 0) {
      std::fprintf(stderr, "bench_collectives: rank %zu exited with %d\n", r, codes[r]);
      rc = 1;
    }
  return rc;
}
