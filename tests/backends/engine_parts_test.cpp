// Engine-specific parts that need no peers: the gloo store adapter over a lockstep Store,
// and the CHECK_NCCL / CHECK_CUDA error mapping (no GPU needed to name an error).
#include <gtest/gtest.h>

#include <thread>

#include "lockstep/comm/backends/config.h"
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

TEST(EngineParts, BuiltWith) {
  // Documents in the test log what this binary covered.
  std::cout << "gloo=" << LOCKSTEP_HAVE_GLOO << " nccl=" << LOCKSTEP_HAVE_NCCL << "\n";
}

}  // namespace
}  // namespace lockstep::comm
