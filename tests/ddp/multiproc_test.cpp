// DDP across real processes (fork, FileStore rendezvous, native backend over shared memory):
// replicas identical and equal to one process on the concatenated batch; a rank that dies
// mid-training turns into an error naming the bucket on the survivor, not a hang.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "ddp_test_util.h"
#include "lockstep/store/file_store.h"

namespace lockstep::ddp {
namespace {
using namespace testing;

constexpr int kWorld = 2;
constexpr int64_t kBatch = 8;

// A directory of its own for each test (the FileStore in it must not hold an earlier test's keys).
std::string tmp_dir() {
  static int n = 0;
  std::string d = ::testing::TempDir() + "ddp_mp_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
  ::mkdir(d.c_str(), 0700);
  return d;
}

// The parameters a step starts from and the gradients DDP averaged, parameter by parameter.
void write_step(const std::string& path, nn::Model& m) {
  std::ofstream f(path, std::ios::binary);
  for (nn::Parameter* p : m.parameters()) f.write(reinterpret_cast<const char*>(p->value_data()), p->numel() * 4);
  for (nn::Parameter* p : m.parameters()) f.write(reinterpret_cast<const char*>(p->grad_data()), p->numel() * 4);
}

void read_step(const std::string& path, nn::Model& m) {
  std::ifstream f(path, std::ios::binary);
  for (nn::Parameter* p : m.parameters()) f.read(reinterpret_cast<char*>(p->value_data()), p->numel() * 4);
  for (nn::Parameter* p : m.parameters()) f.read(reinterpret_cast<char*>(p->grad_data()), p->numel() * 4);
  ASSERT_TRUE(f) << path << " is short";
}

// The body of one child process; returns its exit status. die_after >= 0: exit abruptly.
int child(int rank, const std::string& dir, int steps, int die_after) {
  try {
    store::FileStore store(dir + "/store", std::chrono::seconds(20));
    comm::Options o;
    o.timeout = std::chrono::seconds(5);
    auto pg = comm::ProcessGroup::create("native", store, rank, kWorld, o);
    auto m = nn::make_model("fmnist-mlp", 7 + uint64_t(rank));
    DdpOptions opt;
    opt.timeout = std::chrono::seconds(5);
    opt.check_replicas_every = 5;
    DistributedDataParallel ddp(*m, *pg, opt);
    nn::Sgd sgd(*m, {.lr = 0.05f, .momentum = 0.9f});
    nn::CrossEntropyLoss ce;
    for (int step = 0; step < steps; ++step) {
      if (step == die_after) ::_exit(3);  // a crash: no goodbye to the peers
      m->zero_grad();
      ddp_forward_backward(ddp, ce, make_batch(int64_t(step) * kWorld * kBatch + rank * kBatch, kBatch));
      if (step == steps - 1) write_step(dir + "/last_step." + std::to_string(rank), *m);
      ddp.step(sgd);
    }
    std::ofstream(dir + "/params." + std::to_string(rank), std::ios::binary)
        .write(reinterpret_cast<const char*>(m->flat_params().data()), std::streamsize(m->flat_params().size_bytes()));
    return 0;
  } catch (const std::exception& e) {
    std::ofstream(dir + "/error." + std::to_string(rank)) << e.what();
    return 2;
  }
}

// Forks the ranks and waits (bounded) for them; returns exit codes (-1: killed on timeout).
std::vector<int> run_processes(const std::string& dir, int steps, int die_rank, int die_after) {
  std::vector<pid_t> pids;
  for (int r = 0; r < kWorld; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(child(r, dir, steps, r == die_rank ? die_after : -1));
    pids.push_back(pid);
  }
  std::vector<int> codes(kWorld, -1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int r = 0; r < kWorld; ++r) {
    int status = 0;
    while (::waitpid(pids[size_t(r)], &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        for (pid_t p : pids) ::kill(p, SIGKILL);
        ::waitpid(pids[size_t(r)], &status, 0);
        status = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    codes[size_t(r)] = status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return codes;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(MultiProcess, ReplicasMatchOneProcessOnTheConcatenatedBatch) {
  const std::string dir = tmp_dir();
  const int steps = 20;
  auto codes = run_processes(dir, steps, -1, -1);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << slurp(dir + "/error.0") << slurp(dir + "/error.1");
  const std::string p0 = slurp(dir + "/params.0"), p1 = slurp(dir + "/params.1");
  ASSERT_FALSE(p0.empty());
  EXPECT_EQ(p0, p1) << "replicas are not bit-identical";
  // The last step against one process on its concatenated batch, from the same parameters
  // (OneProcessCheck says why trajectories are not compared, and where the bounds come from).
  auto m = nn::make_model("fmnist-mlp", 7);
  read_step(dir + "/last_step.0", *m);
  OneProcessCheck check("fmnist-mlp", kWorld, kBatch);
  check.check(steps - 1, *m, make_batch(int64_t(steps - 1) * kWorld * kBatch, kWorld * kBatch));
  EXPECT_LT(check.worst(), 1.0);
}

TEST(MultiProcess, DeadPeerBecomesAnErrorNotAHang) {
  const std::string dir = tmp_dir();
  const auto t0 = std::chrono::steady_clock::now();
  auto codes = run_processes(dir, 50, /*die_rank=*/1, /*die_after=*/3);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(codes[1], 3);
  EXPECT_EQ(codes[0], 2) << "the survivor should stop with an error";
  const std::string err = slurp(dir + "/error.0");
  EXPECT_NE(err.find("rank 0"), std::string::npos) << err;
  EXPECT_NE(err.find("bucket"), std::string::npos) << err;
  EXPECT_LT(secs, 30.0);
}

}  // namespace
}  // namespace lockstep::ddp
