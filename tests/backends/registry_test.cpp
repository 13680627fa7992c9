// The registry of built-in backends and the parts of the nccl backend that need no GPU:
// settings parsing and the exchange of the unique id through the store.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "lockstep/comm/backends/config.h"
#include "lockstep/comm/backends/nccl/nccl_options.h"
#include "lockstep/comm/backends/registry.h"
#include "lockstep/comm/native_process_group.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/core/error.h"
#include "lockstep/store/hash_store.h"

namespace lockstep::comm {
namespace {

TEST(Registry, BuiltBackendsMatchTheConfigAndRegisterOnce) {
  register_builtin_backends();
  register_builtin_backends();  // idempotent
  auto built = built_backends();
  ASSERT_FALSE(built.empty());
  EXPECT_EQ(built.front(), "native");
  auto has = [&](const char* n) { return std::find(built.begin(), built.end(), n) != built.end(); };
  EXPECT_EQ(has("mpi"), bool(LOCKSTEP_HAVE_MPI));
  EXPECT_EQ(has("gloo"), bool(LOCKSTEP_HAVE_GLOO));
  EXPECT_EQ(has("nccl"), bool(LOCKSTEP_HAVE_NCCL));
  auto registered = ProcessGroup::backends();
  for (const auto& b : built)
    EXPECT_NE(std::find(registered.begin(), registered.end(), b), registered.end()) << b;
  EXPECT_NE(backends_summary().find("native"), std::string::npos);
}

TEST(Registry, UnavailableReasons) {
  EXPECT_EQ(backend_unavailable_reason("native", 4), "");
  EXPECT_NE(backend_unavailable_reason("nosuch", 2), "");
  if (LOCKSTEP_HAVE_MPI && std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr) {
    EXPECT_NE(backend_unavailable_reason("mpi", 2).find("mpirun"), std::string::npos);
  }
}

TEST(Registry, MpiOutsideALauncherIsAClearConfigError) {
  if (!LOCKSTEP_HAVE_MPI || std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr)
    GTEST_SKIP() << "needs the mpi backend, outside mpirun";
  register_builtin_backends();
  store::HashStore store;
  try {
    ProcessGroup::create("mpi", store, 0, 2);
    ADD_FAILURE() << "created an mpi group of 2 outside mpirun";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("mpirun"), std::string::npos) << e.what();
  }
}

// --- plugins (a shared build): where they are looked for, and a backend not installed --------

// LOCKSTEP_BACKEND_PATH for one scope, and an empty folder to point it at.
struct BackendPathFor {
  explicit BackendPathFor(const std::string& value) {
    ::setenv("LOCKSTEP_BACKEND_PATH", value.c_str(), 1);
  }
  ~BackendPathFor() { ::unsetenv("LOCKSTEP_BACKEND_PATH"); }
};
std::filesystem::path empty_dir() {
  auto d = std::filesystem::temp_directory_path() /
           ("lockstep_no_plugins_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}
bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(Registry, PluginsLoadFromBesideLockstepsLibrariesOrFromLockstepBackendPath) {
  if (!LOCKSTEP_BACKEND_PLUGINS) GTEST_SKIP() << "a static build links the backends in";
  ::unsetenv("LOCKSTEP_BACKEND_PATH");
  EXPECT_EQ(backend_plugin_dirs(), std::vector<std::string>{LOCKSTEP_PLUGIN_DIR});
  EXPECT_EQ(available_backends(), built_backends());  // every plugin built loads here
  // A search path of several folders: an empty one, then the build's.
  const auto dir = empty_dir();
  BackendPathFor env(dir.string() + ":" + LOCKSTEP_PLUGIN_DIR);
  EXPECT_EQ(backend_plugin_dirs(), (std::vector<std::string>{dir.string(), LOCKSTEP_PLUGIN_DIR}));
  EXPECT_EQ(available_backends(), built_backends());
  std::filesystem::remove_all(dir);
}

TEST(Registry, ABackendNotInstalledNamesThePackageTheFolderAndTheLoaderError) {
  if (!LOCKSTEP_BACKEND_PLUGINS || !LOCKSTEP_HAVE_GLOO) GTEST_SKIP() << "needs gloo as a plugin";
  register_builtin_backends();
  const auto dir = empty_dir();
  BackendPathFor env(dir.string());
  store::HashStore store;
  try {
    ProcessGroup::create("gloo", store, 0, 1);
    ADD_FAILURE() << "created a gloo group with no gloo plugin in " << dir;
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_TRUE(contains(m, "backend 'gloo' cannot be loaded")) << m;
    EXPECT_TRUE(contains(m, "apt install libgloo-dev")) << m;  // what to install
    // dlopen's own words, for the file it tried.
    EXPECT_TRUE(contains(
        m, (dir / "liblockstep_backend_gloo.so").string() + ": cannot open shared object file"))
        << m;
    EXPECT_TRUE(contains(m, "LOCKSTEP_BACKEND_PATH=" + dir.string())) << m;
  }
  EXPECT_EQ(available_backends(), std::vector<std::string>{"native"});
  EXPECT_TRUE(contains(backend_unavailable_reason("gloo", 2), "libgloo-dev"));
  const std::string summary = backends_summary();  // `lockstep --version`
  EXPECT_TRUE(contains(summary, "backends: native\n")) << summary;
  EXPECT_TRUE(contains(summary, "libgloo-dev")) << summary;
  EXPECT_TRUE(!LOCKSTEP_HAVE_MPI || contains(summary, "libopenmpi-dev")) << summary;
  EXPECT_TRUE(!LOCKSTEP_HAVE_NCCL || contains(summary, "NCCL")) << summary;
  std::filesystem::remove_all(dir);
}

TEST(Registry, NcclWithoutAGpuIsAClearConfigError) {
  if (!LOCKSTEP_HAVE_NCCL) GTEST_SKIP() << "nccl backend not built";
  if (backend_unavailable_reason("nccl", 1).empty()) GTEST_SKIP() << "this machine has a GPU";
  register_builtin_backends();
  store::HashStore store;
  EXPECT_THROW(ProcessGroup::create("nccl", store, 0, 2), ConfigError);
}

// --- nccl: settings and unique-id exchange (no GPU needed) ----------------------------------

EnvLookup env(std::map<std::string, std::string> m) {
  return [m](std::string_view k) -> std::optional<std::string> {
    auto it = m.find(std::string(k));
    if (it == m.end()) return std::nullopt;
    return it->second;
  };
}

TEST(NcclOptions, DefaultsAndOverrides) {
  auto d = nccl::parse_nccl_config(env({}));
  EXPECT_EQ(d.device, -1);
  EXPECT_FALSE(d.blocking);
  auto c = nccl::parse_nccl_config(env({{"LOCKSTEP_NCCL_DEVICE", "3"},
                                        {"LOCKSTEP_NCCL_BLOCKING", "1"},
                                        {"LOCKSTEP_NCCL_POLL_US", "0"},
                                        {"LOCKSTEP_NCCL_SINGLE_RANK_ENGINE", "1"}}));
  EXPECT_TRUE(c.single_rank_engine);
  EXPECT_FALSE(d.single_rank_engine);
  EXPECT_EQ(c.device, 3);
  EXPECT_TRUE(c.blocking);
  EXPECT_EQ(c.poll_interval.count(), 0);
  EXPECT_THROW(nccl::parse_nccl_config(env({{"LOCKSTEP_NCCL_DEVICE", "gpu0"}})), ConfigError);
  EXPECT_THROW(nccl::parse_nccl_config(env({{"LOCKSTEP_NCCL_BLOCKING", "2"}})), ConfigError);
}

TEST(NcclOptions, DeviceChoice) {
  nccl::NcclConfig c;
  EXPECT_EQ(nccl::choose_device(c, 5, 4), 1);  // local rank modulo devices
  c.device = 2;
  EXPECT_EQ(nccl::choose_device(c, 5, 4), 2);
  EXPECT_THROW(nccl::choose_device(c, 0, 2), ConfigError);
  EXPECT_THROW(nccl::choose_device(nccl::NcclConfig{}, 0, 0), ConfigError);
}

TEST(NcclOptions, BackendOptionsNameTheDeviceOverTheEnvironment) {
  const auto from_env = nccl::parse_nccl_config(env({{"LOCKSTEP_NCCL_DEVICE", "3"}}));
  Options o;
  EXPECT_EQ(nccl::with_options(from_env, o).device, 3);  // no backend options: the environment
  auto mine = std::make_shared<nccl::NcclOptions>();
  o.backend = mine;
  EXPECT_EQ(nccl::with_options(from_env, o).device, 3);  // -1 leaves the environment's choice
  mine->device = 1;
  const auto c = nccl::with_options(from_env, o);
  EXPECT_EQ(c.device, 1);
  EXPECT_EQ(c.blocking, from_env.blocking);  // the rest still from the environment
  o.backend = std::make_shared<NativeOptions>();  // another backend's options: ignored
  EXPECT_EQ(nccl::with_options(from_env, o).device, 3);
}

TEST(NcclUniqueId, EveryRankGetsRootsBytes) {
  store::HashStore store;
  constexpr int kWorld = 4;
  constexpr size_t kSize = 128;
  std::vector<store::Bytes> got(kWorld);
  std::vector<std::thread> ts;
  for (int r = 0; r < kWorld; ++r)
    ts.emplace_back([&, r] {
      got[r] = nccl::exchange_unique_id(
          store, "nccl/g/0/unique_id", r, 0,
          [] {
            store::Bytes id(kSize);
            for (size_t i = 0; i < kSize; ++i) id[i] = uint8_t(i * 7 + 1);
            return id;
          },
          kSize, std::chrono::seconds(10));
    });
  for (auto& t : ts) t.join();
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(got[r], got[0]) << r;
  EXPECT_EQ(got[0][1], 8);
}

TEST(NcclUniqueId, MissingRootTimesOutAndForeignBytesAreRejected) {
  store::HashStore store;
  auto never = []() -> store::Bytes { throw InternalError("rank 1 must not make the id"); };
  EXPECT_THROW(nccl::exchange_unique_id(store, "k", 1, 0, never, 128, std::chrono::milliseconds(100)),
               TimeoutError);
  store.set("k", std::string_view("short"));
  EXPECT_THROW(nccl::exchange_unique_id(store, "k", 1, 0, never, 128, std::chrono::seconds(1)),
               ProtocolError);
}

}  // namespace
}  // namespace lockstep::comm
