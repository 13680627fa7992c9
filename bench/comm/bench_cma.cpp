// Can a rank copy straight out of a peer's ordinary memory fast enough to skip the staging
// slots? Linux's cross-memory attach (process_vm_readv, what Open MPI's shared-memory
// transport uses for its single-copy path) against memcpy, per chunk size and total size.
// All-reduce of ordinary buffers stages through shared slots because, on the benchmark VM,
// process_vm_readv moves at most half of memcpy's rate, and a twenty-fifth of it in 4 KiB
// calls (docs/benchmarks.md, sessions 9-10): pinning the peer's pages costs more than the copy
// it saves.
//
// usage: bench_cma [--max-mib 64] [--min-seconds 0.2]
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

void* map_prefaulted(size_t bytes, int fill) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::fprintf(stderr, "bench_cma: mmap of %zu bytes failed: %s\n", bytes, std::strerror(errno));
    std::exit(1);
  }
  std::memset(p, fill, bytes);  // touch every page: first touches are not what is measured
  return p;
}

// Seconds per pass of fn over `total` bytes, repeated for at least min_seconds.
template <class Fn>
double per_pass(double min_seconds, Fn&& fn) {
  fn();  // warm-up
  int passes = 0;
  const auto t0 = Clock::now();
  double s = 0;
  do {
    fn();
    ++passes;
    s = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (s < min_seconds);
  return s / passes;
}

}  // namespace

int main(int argc, char** argv) {
  size_t max_bytes = 64 << 20;
  double min_seconds = 0.2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--max-mib" && i + 1 < argc) max_bytes = size_t(std::atof(argv[++i]) * (1 << 20));
    else if (a == "--min-seconds" && i + 1 < argc) min_seconds = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_cma [--max-mib 64] [--min-seconds 0.2]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  auto* src = static_cast<char*>(map_prefaulted(max_bytes, 7));
  int hold[2];
  if (::pipe(hold) != 0) return 1;
  const pid_t peer = ::fork();  // owns its copy of `src` until we close the pipe
  if (peer == 0) {
    char c;
    (void)!::read(hold[0], &c, 1);
    ::_exit(0);
  }
  auto* dst = static_cast<char*>(map_prefaulted(max_bytes, 1));
  std::printf("# bench_cma: process_vm_readv from a peer process against memcpy in this one\n");
  std::printf("%10s %10s %12s %12s %12s %8s\n", "chunk(B)", "total(B)", "cma(GB/s)", "us/call", "memcpy(GB/s)",
              "cma/mc");
  int rc = 0;
  for (size_t total = 1 << 20; total <= max_bytes && rc == 0; total *= 8) {
    for (size_t chunk = 4096; chunk <= total; chunk *= 4) {
      bool failed = false;
      const double cma = per_pass(min_seconds, [&] {
        for (size_t off = 0; off < total && !failed; off += chunk) {
          iovec local{dst + off, chunk}, remote{src + off, chunk};
          if (::process_vm_readv(peer, &local, 1, &remote, 1, 0) != ssize_t(chunk)) failed = true;
        }
      });
      if (failed) {
        std::fprintf(stderr,
                     "bench_cma: process_vm_readv from pid %d failed: %s (ptrace restrictions such as "
                     "kernel.yama.ptrace_scope or a seccomp profile forbid cross-memory attach here)\n",
                     int(peer), std::strerror(errno));
        rc = 1;
        break;
      }
      const double mc = per_pass(min_seconds, [&] {
        for (size_t off = 0; off < total; off += chunk) std::memcpy(dst + off, src + off, chunk);
        asm volatile("" ::"r"(dst) : "memory");
      });
      std::printf("%10zu %10zu %12.2f %12.2f %12.2f %8.2f\n", chunk, total, double(total) / cma / 1e9,
                  cma / double(total / chunk) * 1e6, double(total) / mc / 1e9, mc / cma);
    }
  }
  (void)!::write(hold[1], "x", 1);
  ::waitpid(peer, nullptr, 0);
  return rc;
}
