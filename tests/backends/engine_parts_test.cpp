// Engine-specific parts that need no peers: the gloo store adapter over a lockstep Store,
// the CHECK_NCCL / CHECK_CUDA error mapping (no GPU needed to name an error), and how the
// engine carries a DeviceOrder event to execute() (what the nccl backend waits on).
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "lockstep/comm/backends/config.h"
#include "lockstep/comm/engine.h"
#include "lockstep/core/error.h"
#include "lockstep/store/hash_store.h"

#if LOCKSTEP_HAVE_GLOO
#include "lockstep/comm/backends/gloo/gloo_store.h"
#endif
#if LOCKSTEP_HAVE_NCCL
#include "lockstep/comm/backends/nccl/nccl_check.h"
#endif

namespace lockstep::comm {
namespace {

#if LOCKSTEP_HAVE_GLOO
TEST(GlooStore, SetGetWaitThroughALockstepStoreUnderItsPrefix) {
  store::HashStore store;
  gloo_backend::GlooStore a(store, "gloo/g/0/", std::chrono::seconds(5));
  a.set("rank_1", std::vector<char>{'a', 'b', '\0', 'c'});
  EXPECT_TRUE(store.check({"gloo/g/0/rank_1"}));
  EXPECT_EQ(a.get("rank_1"), (std::vector<char>{'a', 'b', '\0', 'c'}));
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    a.set("rank_2", std::vector<char>{'x'});
  });
  a.wait({"rank_1", "rank_2"}, std::chrono::milliseconds(5000));
  later.join();
  EXPECT_EQ(a.get("rank_2"), std::vector<char>{'x'});
}

TEST(GlooStore, WaitsAreBounded) {
  store::HashStore store;
  gloo_backend::GlooStore a(store, "p/", std::chrono::milliseconds(100));
  const auto start = Clock::now();
  EXPECT_THROW(a.get("never"), TimeoutError);
  EXPECT_THROW(a.wait({"never"}), TimeoutError);
  // gloo's own (longer) timeout never stretches ours.
  EXPECT_THROW(a.wait({"never"}, std::chrono::milliseconds(60000)), TimeoutError);
  EXPECT_LT(seconds_since(start), 5.0);
}
#endif

#if LOCKSTEP_HAVE_NCCL
TEST(NcclErrors, MappedToLockstepExceptionsNamingCallAndContext) {
  try {
    CHECK_NCCL(ncclInvalidArgument, "allreduce #3 (rank 1, group 'g')");
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("ncclInvalidArgument"), std::string::npos) << m;
    EXPECT_NE(m.find("allreduce #3 (rank 1"), std::string::npos) << m;
  }
  EXPECT_THROW(CHECK_NCCL(ncclRemoteError, "x"), PeerError);
  EXPECT_THROW(CHECK_NCCL(ncclSystemError, "x"), PeerError);
  EXPECT_THROW(CHECK_NCCL(ncclInternalError, "x"), Error);
  EXPECT_NO_THROW(CHECK_NCCL(ncclInProgress, "x"));  // non-blocking mode: not an error
  EXPECT_NO_THROW(CHECK_NCCL(ncclSuccess, "x"));
  EXPECT_THROW(CHECK_CUDA(cudaErrorNoDevice, "device query"), ConfigError);
  EXPECT_THROW(CHECK_CUDA(cudaErrorInvalidValue, "x"), InvalidArgument);
  EXPECT_THROW(CHECK_CUDA(cudaErrorLaunchFailure, "x"), Error);
}
#endif

// A one-rank engine that runs every operation through execute() (no one-rank shortcut) and
// records what each saw; execute() waits until the test opens the gate.
class RecordingEngine final : public engine::EngineGroup {
 public:
  struct Seen {
    void* event;
    int state;  // what the event's stand-in (an int) held when it ran: 1 live, -1 destroyed
  };
  RecordingEngine() : EngineGroup("recording", 0, 1, Options{}) {
    set_single_rank_shortcut(false);
    start_worker();
  }
  ~RecordingEngine() override { stop_worker(); }
  bool supports(Capability) const override { return false; }
  void open() { gate_.set_value(); }
  std::vector<Seen> seen() {
    std::lock_guard<std::mutex> lk(mu_);
    return seen_;
  }

 protected:
  void execute(const engine::Op& op, const OpInfo&, Deadline) override {
    opened_.wait();
    std::lock_guard<std::mutex> lk(mu_);
    void* e = op.after_event.get();
    seen_.push_back({e, e ? *static_cast<int*>(e) : 0});
  }
  std::unique_ptr<ProcessGroup> make_subgroup(const std::vector<int>&, const std::string&,
                                              Deadline) override {
    return nullptr;
  }

 private:
  std::promise<void> gate_;
  std::shared_future<void> opened_ = gate_.get_future().share();
  std::mutex mu_;
  std::vector<Seen> seen_;
};

// DeviceOrder: each operation takes the issuing thread's innermost event, and holds it until
// it has run, though the caller dropped its scope (and its reference) long before.
TEST(DeviceOrder, EachOperationHoldsTheIssuingThreadsEventUntilItHasRun) {
  std::atomic<int> destroyed{0};
  int a = 1, b = 1;  // stand-ins for two cudaEvent_t; their deleter sets them to -1
  auto event = [&](int* e) {
    return std::shared_ptr<void>(e, [&](void* p) {
      *static_cast<int*>(p) = -1;
      ++destroyed;
    });
  };
  RecordingEngine eng;
  float x[4] = {};
  std::vector<Work> works;
  works.push_back(eng.allreduce(x, 4, DType::f32, ReduceOp::sum));
  {
    DeviceOrder outer(event(&a));
    EXPECT_EQ(DeviceOrder::current().get(), &a);
    works.push_back(eng.allreduce(x, 4, DType::f32, ReduceOp::sum));
    {
      DeviceOrder inner(event(&b));
      works.push_back(eng.broadcast(x, 4, DType::f32, 0));
    }
    std::thread other([&] {  // another thread's operations are its own
      EXPECT_EQ(DeviceOrder::current(), nullptr);
      works.push_back(eng.barrier());
    });
    other.join();
    works.push_back(eng.allgather(x, x + 2, 2, DType::f32));
  }
  EXPECT_EQ(DeviceOrder::current(), nullptr);
  works.push_back(eng.allreduce(x, 4, DType::f32, ReduceOp::sum));
  EXPECT_EQ(destroyed.load(), 0) << "the queued operations hold both events";
  eng.open();
  for (const Work& w : works) w.wait(std::chrono::seconds(10));
  const auto seen = eng.seen();
  const std::vector<void*> want = {nullptr, &a, &b, nullptr, &a, nullptr};
  ASSERT_EQ(seen.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(seen[i].event, want[i]) << "operation " << i;
    if (want[i]) EXPECT_EQ(seen[i].state, 1) << "operation " << i << " ran after its event died";
  }
  // Released once run (the engine drops a task just after completing its Work).
  const Deadline until = Deadline::after(std::chrono::seconds(10));
  while (destroyed.load() < 2 && !until.expired())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(destroyed.load(), 2);
}

TEST(EngineParts, BuiltWith) {
  // Documents in the test log what this binary covered.
  std::cout << "gloo=" << LOCKSTEP_HAVE_GLOO << " nccl=" << LOCKSTEP_HAVE_NCCL << "\n";
}

}  // namespace
}  // namespace lockstep::comm
