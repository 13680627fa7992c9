// Store round-trip latency: set / get / add on TcpStore over loopback, beside its peers in
// the same run: HashStore (no I/O: the floor of the Store code itself), FileStore (flock +
// append on a local file) and a raw TCP ping-pong of the same size (the socket ceiling).
//
//   build/h-store/bench/store/store_bench --benchmark_min_time=0.5
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "lockstep/core/error.h"
#include "lockstep/store/file_store.h"
#include "lockstep/store/hash_store.h"
#include "lockstep/store/net.h"
#include "lockstep/store/tcp_store.h"

namespace {

using namespace lockstep;
using namespace lockstep::store;
using namespace std::chrono_literals;

// One loopback server for the whole run, serving on its own thread as rank 0 would.
TcpStoreServer& server() {
  static TcpStoreServer s(TcpStoreServerOptions{.token = "bench"});
  return s;
}

std::vector<std::filesystem::path> g_files;  // FileStore files, removed at exit

std::unique_ptr<Store> make_store(const std::string& kind) {
  if (kind == "hash") return std::make_unique<HashStore>();
  if (kind == "tcp") {
    return std::make_unique<TcpStore>(TcpStoreOptions{.port = server().port(), .token = "bench"});
  }
  static int n = 0;
  auto path = std::filesystem::temp_directory_path() /
              ("lockstep-store-bench-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
  std::filesystem::remove(path);
  g_files.push_back(path);
  return std::make_unique<FileStore>(path.string());
}

void BM_Set(benchmark::State& st, std::string kind) {
  auto s = make_store(kind);
  Bytes v(size_t(st.range(0)), 7);
  for (auto _ : st) s->set("bench/set", v);
  st.SetBytesProcessed(int64_t(st.iterations()) * st.range(0));
}

void BM_Get(benchmark::State& st, std::string kind) {
  auto s = make_store(kind);
  Bytes v(size_t(st.range(0)), 7);
  s->set("bench/get", v);
  for (auto _ : st) benchmark::DoNotOptimize(s->get("bench/get", 10s));
  st.SetBytesProcessed(int64_t(st.iterations()) * st.range(0));
}

void BM_Add(benchmark::State& st, std::string kind) {
  auto s = make_store(kind);
  for (auto _ : st) benchmark::DoNotOptimize(s->add("bench/add", 1));
}

// The socket ceiling: a blocking ping-pong of `size` bytes each way with an echo thread.
void BM_RawTcpPingPong(benchmark::State& st) {
  auto listener = net::listen_tcp("127.0.0.1", 0, 4);
  uint16_t port = net::bound_port(listener.get());
  size_t size = size_t(st.range(0));
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    net::Fd c;
    while (!c && !stop) {
      c = net::Fd(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK));
      if (!c) std::this_thread::sleep_for(1ms);
    }
    net::set_nodelay(c.get());
    Bytes buf(size);
    while (!stop && net::recv_exact(c.get(), buf, Deadline::after(5s)) == net::Io::ok) {
      net::send_all(c.get(), buf, Deadline::after(5s));
    }
  });
  int err = 0;
  auto fd = net::connect_once("127.0.0.1", port, Deadline::after(5s), &err);
  Bytes msg(size, 1);
  for (auto _ : st) {
    net::send_all(fd.get(), msg, Deadline::after(5s));
    net::recv_exact(fd.get(), msg, Deadline::after(5s));
  }
  stop = true;
  fd.reset();
  echo.join();
  st.SetBytesProcessed(int64_t(st.iterations()) * st.range(0));
}

std::string machine_line() {
  long mem_kb = 0;
  std::ifstream mi("/proc/meminfo");
  std::string key;
  mi >> key >> mem_kb;
  std::ostringstream os;
  os << std::thread::hardware_concurrency() << " cores, " << mem_kb / 1024 / 1024 << " GiB";
  return os.str();
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd;
  for (int i = 0; i < argc; ++i) {
    if (i) cmd += ' ';
    cmd += argv[i];
  }
  server().start();
  for (const char* kind : {"hash", "tcp", "file"}) {
    std::string k = kind;
    auto* set = benchmark::RegisterBenchmark(("Set/" + k).c_str(), BM_Set, k)->Arg(16);
    // FileStore is append-only: cap big sets so the run writes ~128 MiB, not gigabytes.
    if (k == "file") {
      benchmark::RegisterBenchmark(("Set/" + k).c_str(), BM_Set, k)->Arg(64 << 10)->Iterations(2000);
    } else {
      set->Arg(64 << 10);
    }
    benchmark::RegisterBenchmark(("Get/" + k).c_str(), BM_Get, k)->Arg(16)->Arg(64 << 10);
    benchmark::RegisterBenchmark(("Add/" + k).c_str(), BM_Add, k);
  }
  benchmark::RegisterBenchmark("RawTcpPingPong", BM_RawTcpPingPong)->Arg(16)->Arg(64 << 10);
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("command", cmd);
  benchmark::AddCustomContext("machine", machine_line());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (auto& f : g_files) std::filesystem::remove(f);
  return 0;
}
