// The Store contract, checked the same way for every implementation: HashStore, TcpStore,
// FileStore and PrefixStore (over a TcpStore). "Clients" are separate objects on the same
// store where the implementation has such a thing (TCP connections, file handles).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "lockstep/store/file_store.h"
#include "lockstep/store/hash_store.h"
#include "lockstep/store/prefix_store.h"
#include "lockstep/store/tcp_store.h"
#include "store_test_util.h"

namespace lockstep::store {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

// Owns one store and hands out clients of it.
class Harness {
 public:
  virtual ~Harness() = default;
  virtual std::unique_ptr<Store> make_client() = 0;
  Store& client(size_t i) {
    while (clients_.size() <= i) clients_.push_back(make_client());
    return *clients_[i];
  }

 private:
  std::vector<std::unique_ptr<Store>> clients_;
};

// A non-owning view so that every HashStore "client" is the one store.
class Ref final : public Store {
 public:
  explicit Ref(Store& s) : s_(s) {}
  void set(const std::string& k, std::span<const uint8_t> v) override { s_.set(k, v); }
  Bytes get(const std::string& k, Millis t) override { return s_.get(k, t); }
  int64_t add(const std::string& k, int64_t d) override { return s_.add(k, d); }
  Bytes compare_set(const std::string& k, std::span<const uint8_t> e,
                    std::span<const uint8_t> d) override {
    return s_.compare_set(k, e, d);
  }
  bool check(const std::vector<std::string>& k) override { return s_.check(k); }
  void wait(const std::vector<std::string>& k, Millis t) override { s_.wait(k, t); }
  bool delete_key(const std::string& k) override { return s_.delete_key(k); }
  int64_t num_keys() override { return s_.num_keys(); }

 private:
  Store& s_;
};

class HashHarness : public Harness {
  HashStore store_;
  std::unique_ptr<Store> make_client() override { return std::make_unique<Ref>(store_); }
};

class TcpHarness : public Harness {
 public:
  TcpHarness() : server_(TcpStoreServerOptions{.token = "conformance"}) { server_.start(); }
  std::unique_ptr<Store> make_client() override {
    return std::make_unique<TcpStore>(
        TcpStoreOptions{.port = server_.port(), .token = "conformance", .connect_timeout = 5s});
  }

 private:
  TcpStoreServer server_;
};

class FileHarness : public Harness {
  TempDir dir_;
  std::unique_ptr<Store> make_client() override {
    return std::make_unique<FileStore>(dir_.file("store"));
  }
};

// PrefixStore over TcpStore clients; each prefix client owns its base client.
class PrefixHarness : public Harness {
  TcpHarness tcp_;
  std::unique_ptr<Store> make_client() override {
    return std::make_unique<PrefixStore>("job/7", tcp_.make_client());
  }
};

std::unique_ptr<Harness> make_harness(const std::string& kind) {
  if (kind == "Hash") return std::make_unique<HashHarness>();
  if (kind == "Tcp") return std::make_unique<TcpHarness>();
  if (kind == "File") return std::make_unique<FileHarness>();
  return std::make_unique<PrefixHarness>();
}

class StoreConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { h_ = make_harness(GetParam()); }
  Store& c(size_t i = 0) { return h_->client(i); }
  std::unique_ptr<Harness> h_;
};

TEST_P(StoreConformance, SetThenGetReturnsTheValue) {
  c().set("k", std::string_view("hello"));
  EXPECT_EQ(to_string(c().get("k", 1s)), "hello");
  EXPECT_EQ(to_string(c(1).get("k", 1s)), "hello");
  c(1).set("k", std::string_view("again"));  // overwrite
  EXPECT_EQ(to_string(c().get("k", 1s)), "again");
}

TEST_P(StoreConformance, ValuesAreBinaryAndMayBeEmpty) {
  Bytes bin = {0, 1, 0, 255, 10, 13, 0};
  c().set("bin", bin);
  EXPECT_EQ(c(1).get("bin", 1s), bin);
  c().set("empty", Bytes{});
  EXPECT_TRUE(c(1).get("empty", 1s).empty());
  EXPECT_TRUE(c(1).check({"empty"}));
}

TEST_P(StoreConformance, LargeValueRoundTrips) {
  Bytes big(8u << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i * 131 + 7);
  c().set("big", big);
  EXPECT_EQ(c(1).get("big", 10s), big);
}

TEST_P(StoreConformance, GetWaitsForAKeySetLater) {
  c(1);  // clients are made lazily: make them before the threads
  std::thread setter([&] {
    std::this_thread::sleep_for(50ms);
    c(1).set("later", std::string_view("v"));
  });
  EXPECT_EQ(to_string(c().get("later", 10s)), "v");
  setter.join();
}

TEST_P(StoreConformance, GetTimesOutNamingTheKey) {
  auto t0 = Clock::now();
  try {
    c().get("missing/key-42", 150ms);
    FAIL() << "get did not time out";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("missing/key-42"), std::string::npos) << e.what();
  }
  double s = seconds_since(t0);
  EXPECT_GE(s, 0.14);
  EXPECT_LT(s, 3.0);
}

TEST_P(StoreConformance, DefaultTimeoutApplies) {
  c().set_timeout(100ms);
  EXPECT_THROW(c().get("never"), TimeoutError);
}

TEST_P(StoreConformance, WaitForSeveralKeys) {
  c(1);
  std::thread setter([&] {
    c(1).set("a", std::string_view("1"));
    std::this_thread::sleep_for(30ms);
    c(1).set("b", std::string_view("2"));
  });
  c().wait({"a", "b"}, 10s);
  setter.join();
  c().wait({}, 10ms);  // nothing to wait for
}

TEST_P(StoreConformance, WaitTimesOutNamingOnlyMissingKeys) {
  c().set("present", std::string_view("x"));
  try {
    c().wait({"present", "absent-1"}, 100ms);
    FAIL() << "wait did not time out";
  } catch (const TimeoutError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("absent-1"), std::string::npos) << m;
    EXPECT_EQ(m.find("'present'"), std::string::npos) << m;
  }
}

TEST_P(StoreConformance, AddCounts) {
  EXPECT_EQ(c().add("n", 1), 1);
  EXPECT_EQ(c(1).add("n", 5), 6);
  EXPECT_EQ(c().add("n", -10), -4);
  EXPECT_EQ(c().add("n", 0), -4);
  EXPECT_EQ(to_string(c(1).get("n", 1s)), "-4");  // counters are decimal text
  c().set("text", std::string_view("abc"));
  EXPECT_THROW(c().add("text", 1), InvalidArgument);
}

TEST_P(StoreConformance, ConcurrentAddsAreAtomic) {
  constexpr int kThreads = 8, kEach = 50;
  for (int t = 0; t < kThreads; ++t) c(size_t(t));  // create clients before the threads
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) c(size_t(t)).add("ctr", 1);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(c().add("ctr", 0), kThreads * kEach);
}

TEST_P(StoreConformance, CompareSet) {
  auto b = [](std::string_view s) { return to_bytes(s); };
  // Absent key, empty expected: sets.
  EXPECT_EQ(c().compare_set("cas", {}, b("one")), b("one"));
  // Wrong expected: unchanged, returns the current value.
  EXPECT_EQ(c(1).compare_set("cas", b("zzz"), b("two")), b("one"));
  // Right expected: swaps.
  EXPECT_EQ(c(1).compare_set("cas", b("one"), b("two")), b("two"));
  EXPECT_EQ(c().get("cas", 1s), b("two"));
  // Absent key, non-empty expected: not created, returns expected.
  EXPECT_EQ(c().compare_set("cas-absent", b("x"), b("y")), b("x"));
  EXPECT_FALSE(c().check({"cas-absent"}));
}

TEST_P(StoreConformance, CheckDoesNotWait) {
  EXPECT_TRUE(c().check({}));
  EXPECT_FALSE(c().check({"c1"}));
  c(1).set("c1", std::string_view("v"));
  EXPECT_TRUE(c().check({"c1"}));
  EXPECT_FALSE(c().check({"c1", "c2"}));
}

TEST_P(StoreConformance, DeleteKey) {
  c().set("d", std::string_view("v"));
  EXPECT_TRUE(c(1).delete_key("d"));
  EXPECT_FALSE(c(1).delete_key("d"));
  EXPECT_FALSE(c().check({"d"}));
  EXPECT_THROW(c().get("d", 50ms), TimeoutError);
}

TEST_P(StoreConformance, NumKeysCountsDistinctKeys) {
  int64_t n0 = c().num_keys();
  c().set("nk1", std::string_view("a"));
  c(1).set("nk2", std::string_view("b"));
  c().set("nk1", std::string_view("c"));
  EXPECT_EQ(c().num_keys() - n0, 2);
  c().delete_key("nk1");
  EXPECT_EQ(c(1).num_keys() - n0, 1);
}

TEST_P(StoreConformance, RejectsBadKeysAndValues) {
  EXPECT_THROW(c().set("", std::string_view("v")), InvalidArgument);
  EXPECT_THROW(c().get(std::string(kMaxKeyBytes + 1, 'k'), 10ms), InvalidArgument);
  Bytes too_big(kMaxValueBytes + 1);
  EXPECT_THROW(c().set("big", too_big), InvalidArgument);
  c().set("after", std::string_view("ok"));  // the store is still usable
  EXPECT_EQ(to_string(c(1).get("after", 1s)), "ok");
}

INSTANTIATE_TEST_SUITE_P(AllStores, StoreConformance,
                         ::testing::Values("Hash", "Tcp", "File", "Prefix"),
                         [](const auto& p) { return p.param; });

TEST(PrefixStore, NamespacesDoNotClash) {
  HashStore base;
  PrefixStore a("a", base), b("b", base);
  a.set("k", std::string_view("from a"));
  b.set("k", std::string_view("from b"));
  EXPECT_EQ(to_string(a.get("k", 1s)), "from a");
  EXPECT_EQ(to_string(base.get("b/k", 1s)), "from b");
  PrefixStore nested("inner", a);
  nested.set("x", std::string_view("1"));
  EXPECT_TRUE(base.check({"a/inner/x"}));
  EXPECT_THROW(PrefixStore("", base), InvalidArgument);
}

TEST(FileStore, CorruptFileIsADataErrorNamingThePath) {
  TempDir dir;
  auto path = dir.file("bad");
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fputs("this is not a store file at all", f);
  std::fclose(f);
  FileStore s(path);
  try {
    s.num_keys();
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(FileStore, TruncatedTailRecordIsDropped) {
  TempDir dir;
  auto path = dir.file("s");
  {
    FileStore s(path);
    s.set("good", std::string_view("1"));
  }
  FILE* f = std::fopen(path.c_str(), "ab");
  std::fputc('S', f);  // a writer that died one byte into its record
  std::fclose(f);
  FileStore s(path);
  EXPECT_EQ(to_string(s.get("good", 1s)), "1");
  s.set("next", std::string_view("2"));
  FileStore s2(path);
  EXPECT_EQ(to_string(s2.get("next", 1s)), "2");
  EXPECT_EQ(s2.num_keys(), 2);
}

TEST(FileStore, UnwritableDirectoryNamesThePath) {
  try {
    FileStore s("/nonexistent-dir/lockstep/store");
    FAIL() << "no error";
  } catch (const SystemError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/lockstep/store"), std::string::npos);
  }
}

}  // namespace
}  // namespace lockstep::store
