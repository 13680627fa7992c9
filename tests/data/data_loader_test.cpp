#include "lockstep/data/data_loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <chrono>
#include <functional>
#include <set>
#include <thread>

#include "lockstep/core/error.h"
#include "test_util.h"

// Counts heap allocations while g_count_allocs is set, to check that a loader in steady
// state assembles batches without allocating (global operator new is replaced for the
// whole test binary; it only counts, then defers to malloc).
namespace {
std::atomic<bool> g_count_allocs{false};
std::atomic<int64_t> g_allocs{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_count_allocs.load(std::memory_order_relaxed)) ++g_allocs;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace lockstep::data {
namespace {

// n images 2x4x5 whose pixels encode the sample index; label = index % 10.
Dataset make_images(int64_t n) {
  std::vector<uint8_t> px;
  std::vector<int32_t> labels;
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 40; ++k) px.push_back(static_cast<uint8_t>((i * 3 + k) & 255));
    labels.push_back(static_cast<int32_t>(i % 10));
  }
  return Dataset::from_u8("imgs", FeatureKind::image_u8, {2, 4, 5}, px, labels, 1, 10);
}

struct Collected {
  std::vector<int64_t> indices;
  std::vector<float> features;
  std::vector<int32_t> labels;
  std::vector<int64_t> sizes;
};

Collected drain(DataLoader& l) {
  Collected c;
  while (const Batch* b = l.next()) {
    c.indices.insert(c.indices.end(), b->indices().begin(), b->indices().end());
    c.features.insert(c.features.end(), b->features().begin(), b->features().end());
    c.labels.insert(c.labels.end(), b->labels().begin(), b->labels().end());
    c.sizes.push_back(b->size());
  }
  return c;
}

SamplerOptions sopts(int64_t n, int rank = 0, int world = 1) {
  return {.dataset_size = n, .rank = rank, .world_size = world, .seed = 5};
}

TEST(DataLoader, OrderEqualsSamplerOrderAndLabelsMatch) {
  Dataset d = make_images(23);
  for (int prefetch : {0, 1, 3}) {
    DistributedSampler s(sopts(23, 1, 2));
    s.set_epoch(3);
    const auto expect = s.shard();
    DataLoader l(d, s, {.batch_size = 5, .prefetch = prefetch});
    l.set_epoch(3);
    Collected c = drain(l);
    EXPECT_EQ(c.indices, expect);
    EXPECT_EQ(c.sizes, (std::vector<int64_t>{5, 5, 2}));
    for (size_t k = 0; k < c.indices.size(); ++k) {
      EXPECT_EQ(c.labels[k], c.indices[k] % 10);
      EXPECT_FLOAT_EQ(c.features[k * 40 + 7],
                      static_cast<float>((c.indices[k] * 3 + 7) & 255) / 255.f);
    }
    EXPECT_EQ(l.next(), nullptr);  // stays at the end
  }
}

TEST(DataLoader, BatchShapeAndDropLast) {
  Dataset d = make_images(10);
  DataLoader l(d, DistributedSampler(sopts(10)), {.batch_size = 4, .drop_last = true});
  const Batch* b = l.next();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape(), (std::vector<int64_t>{4, 2, 4, 5}));
  EXPECT_EQ(b->features().size(), 4u * 40u);
  EXPECT_EQ(b->labels().size(), 4u);
  EXPECT_EQ(l.batches_left(), 1);
  EXPECT_NE(l.next(), nullptr);
  EXPECT_EQ(l.next(), nullptr);  // the partial batch of 2 is dropped
}

TEST(DataLoader, NormalisationPerChannel) {
  Dataset d = make_images(3);
  DataLoader l(d, DistributedSampler({.dataset_size = 3, .shuffle = false}),
               {.batch_size = 3, .transform = {.mean = {0.5f, 0.25f}, .std = {0.5f, 2.0f}}});
  const Batch* b = l.next();
  ASSERT_NE(b, nullptr);
  const auto f = b->features();
  // sample 1, channel 0 pixel 0 and channel 1 pixel 0.
  EXPECT_FLOAT_EQ(f[40], (3.f / 255.f - 0.5f) / 0.5f);
  EXPECT_FLOAT_EQ(f[40 + 20], (23.f / 255.f - 0.25f) / 2.0f);
  EXPECT_THROW(DataLoader(d, DistributedSampler(sopts(3)), {.transform = {.mean = {1, 2, 3}}}),
               InvalidArgument);
  EXPECT_THROW(DataLoader(d, DistributedSampler(sopts(4)), {}), InvalidArgument);
}

TEST(DataLoader, AugmentationIsDeterministicAndIndependentOfThreads) {
  Dataset d = make_images(40);
  DataLoaderOptions o{.batch_size = 7,
                      .transform = {.crop_padding = 2, .horizontal_flip = true, .seed = 9}};
  Collected runs[3];
  int k = 0;
  for (int prefetch : {0, 1, 4}) {
    o.prefetch = prefetch;
    DataLoader l(d, DistributedSampler(sopts(40)), o);
    l.set_epoch(1);
    runs[k++] = drain(l);
  }
  EXPECT_EQ(runs[0].features, runs[1].features);
  EXPECT_EQ(runs[0].features, runs[2].features);
  // Something was actually changed relative to the plain image, and padding shows up as 0.
  o.transform = {};
  DataLoader plain(d, DistributedSampler(sopts(40)), o);
  plain.set_epoch(1);
  Collected p = drain(plain);
  EXPECT_EQ(p.indices, runs[0].indices);
  EXPECT_NE(p.features, runs[0].features);
  EXPECT_NE(std::count(runs[0].features.begin(), runs[0].features.end(), 0.0f), 0);
  // Other epochs give other crops.
  o.transform = {.crop_padding = 2, .horizontal_flip = true, .seed = 9};
  DataLoader e2(d, DistributedSampler(sopts(40)), o);
  e2.set_epoch(1);
  e2.load_state({.epoch = 2, .offset = 0, .dataset_size = 40, .seed = 5});
  EXPECT_NE(drain(e2).features, runs[0].features);
}

TEST(DataLoader, FlipMirrorsRows) {
  // A 1x1x4 image [0 1 2 3]: flipped it must read [3 2 1 0]; find a seed that flips.
  Dataset d = Dataset::from_u8("row", FeatureKind::image_u8, {1, 1, 4}, {0, 1, 2, 3}, {0}, 1, 1);
  bool saw_flip = false, saw_plain = false;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    DataLoader l(d, DistributedSampler({.dataset_size = 1}),
                 {.batch_size = 1, .transform = {.horizontal_flip = true, .seed = seed}});
    auto f = l.next()->features();
    std::vector<float> v(f.begin(), f.end());
    std::vector<float> reversed(v.rbegin(), v.rend());
    if (std::is_sorted(v.begin(), v.end(), std::greater<>())) {
      saw_flip = true;
      v = reversed;
    } else {
      saw_plain = true;
    }
    for (int k = 0; k < 4; ++k) EXPECT_NEAR(v[static_cast<size_t>(k)], k / 255.f, 1e-7f);
  }
  EXPECT_TRUE(saw_flip);
  EXPECT_TRUE(saw_plain);
}

TEST(DataLoader, ResumeGivesTheSameBatchesAsAnUninterruptedRun) {
  Dataset d = make_images(50);
  DataLoaderOptions o{.batch_size = 6, .prefetch = 2, .transform = {.crop_padding = 1, .seed = 3}};
  for (int stop_after = 0; stop_after <= 5; ++stop_after) {
    DataLoader ref(d, DistributedSampler(sopts(50, 1, 2)), o);
    ref.set_epoch(4);
    Collected full = drain(ref);

    DataLoader first(d, DistributedSampler(sopts(50, 1, 2)), o);
    first.set_epoch(4);
    Collected head;
    for (int i = 0; i < stop_after; ++i) {
      const Batch* b = first.next();
      head.features.insert(head.features.end(), b->features().begin(), b->features().end());
    }
    const std::string saved = first.state().to_string();

    DataLoader second(d, DistributedSampler(sopts(50, 1, 2)), o);
    second.load_state(SamplerState::parse(saved));
    Collected tail = drain(second);
    head.features.insert(head.features.end(), tail.features.begin(), tail.features.end());
    EXPECT_EQ(head.features, full.features) << "stopped after " << stop_after;
  }
}

TEST(DataLoader, WorkerExceptionReachesTheConsumerInOrder) {
  Dataset d = make_images(30);
  DataLoaderOptions o{
      .batch_size = 4, .prefetch = 3, .sample_hook = [](int64_t index, std::span<float>) {
        if (index == 13) throw DataError("sample 13 is broken");
      }};
  DataLoader l(d, DistributedSampler({.dataset_size = 30, .shuffle = false}), o);
  // Batches 0..2 (indices 0..11) come out; the one holding 13 throws.
  for (int i = 0; i < 3; ++i) ASSERT_NE(l.next(), nullptr);
  EXPECT_THROW(l.next(), DataError);
  EXPECT_THROW(l.next(), DataError);  // stays failed until restarted
  o.sample_hook = nullptr;
  l.set_epoch(0);  // a restart works again (the hook still throws at 13)
  EXPECT_NE(l.next(), nullptr);
}

TEST(DataLoader, PrefetchRunsAheadAndShutsDownCleanly) {
  Dataset d = make_images(100);
  std::atomic<int64_t> built{0};
  DataLoaderOptions o{
      .batch_size = 2, .prefetch = 4, .sample_hook = [&](int64_t, std::span<float>) { ++built; }};
  {
    DataLoader l(d, DistributedSampler(sopts(100)), o);
    ASSERT_NE(l.next(), nullptr);
    // The worker fills the prefetch slots while the caller holds the first batch.
    for (int i = 0; i < 200 && built.load() < 2 * 5; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(built.load(), 2 * 5);  // 1 held + 4 ahead, and no more (bounded queue)
  }  // destroyed mid-epoch with the worker blocked: must join without hanging
  SUCCEED();
}

TEST(DataLoader, SlowHookTimesOut) {
  Dataset d = make_images(4);
  DataLoaderOptions o{.batch_size = 1,
                      .prefetch = 1,
                      .sample_hook =
                          [](int64_t, std::span<float>) {
                            std::this_thread::sleep_for(std::chrono::milliseconds(300));
                          },
                      .timeout = std::chrono::milliseconds(20)};
  DataLoader l(d, DistributedSampler(sopts(4)), o);
  EXPECT_THROW(l.next(), TimeoutError);
}

TEST(DataLoader, BuffersAreReused) {
  Dataset d = make_images(40);
  DataLoader l(d, DistributedSampler(sopts(40)), {.batch_size = 4, .prefetch = 2});
  std::set<const float*> buffers;
  for (int e = 0; e < 3; ++e) {
    l.set_epoch(e);
    while (const Batch* b = l.next()) buffers.insert(b->features().data());
  }
  EXPECT_LE(buffers.size(), 3u);  // prefetch + 1 slots, whatever the number of batches
}

TEST(DataLoader, NoAllocationPerBatchInSteadyState) {
  Dataset d = make_images(400);
  for (int prefetch : {0, 2}) {
    DataLoaderOptions o{.batch_size = 8, .prefetch = prefetch,
                        .transform = {.mean = {0.5f}, .std = {0.25f}, .crop_padding = 2,
                                      .horizontal_flip = true}};
    DataLoader l(d, DistributedSampler(sopts(400)), o);
    ASSERT_NE(l.next(), nullptr);  // starts the worker thread (one allocation per epoch)
    g_allocs = 0;
    g_count_allocs = true;
    int batches = 0;
    float sum = 0;
    while (const Batch* b = l.next()) {
      sum += b->features()[0];
      ++batches;
    }
    g_count_allocs = false;
    EXPECT_EQ(batches, 49);
    EXPECT_EQ(g_allocs.load(), 0) << "prefetch=" << prefetch << " sum=" << sum;
  }
}

}  // namespace
}  // namespace lockstep::data
