#include "lockstep/data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

#include "lockstep/core/error.h"
#include "lockstep/data/rng.h"

namespace lockstep::data {
namespace {

std::vector<std::vector<int64_t>> shards(int64_t n, int w, Remainder rem, bool shuffle,
                                         uint64_t seed, int64_t epoch) {
  std::vector<std::vector<int64_t>> out;
  for (int r = 0; r < w; ++r) {
    DistributedSampler s({.dataset_size = n,
                          .rank = r,
                          .world_size = w,
                          .shuffle = shuffle,
                          .seed = seed,
                          .remainder = rem});
    s.set_epoch(epoch);
    out.push_back(s.shard());
  }
  return out;
}

TEST(Rng, GoldenValuesAreFixedAcrossPlatforms) {
  // Pinned so that a change of generator (or a platform difference) is caught: checkpoints
  // and multi-host runs rely on every rank computing the same permutation.
  Rng rng(mix_seed(42, 0));
  std::vector<int> v(10);
  for (int i = 0; i < 10; ++i) v[static_cast<size_t>(i)] = i;
  fisher_yates(std::span<int>(v), rng);
  std::vector<int> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_EQ(Rng(1).next(), 0x910a2dec89025cc1ull);  // SplitMix64 reference output for seed 1
  EXPECT_EQ(v, (std::vector<int>{6, 1, 8, 5, 2, 7, 4, 3, 9, 0}));
}

TEST(Rng, BelowIsInRangeAndRoughlyUniform) {
  Rng rng(7);
  std::vector<int> counts(6);
  for (int i = 0; i < 60000; ++i) ++counts[rng.below(6)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
}

TEST(Sampler, PadShardsAreDisjointAndCompleteForManyWorldSizes) {
  for (int64_t n : {1, 7, 10, 13, 100}) {
    for (int w = 1; w <= 8; ++w) {
      auto sh = shards(n, w, Remainder::pad, true, 3, 1);
      const int64_t per = (n + w - 1) / w;
      std::multiset<int64_t> all;
      for (auto& s : sh) {
        EXPECT_EQ(static_cast<int64_t>(s.size()), per);
        all.insert(s.begin(), s.end());
      }
      for (int64_t i = 0; i < n; ++i) EXPECT_GE(all.count(i), 1u) << "n=" << n << " w=" << w;
      // Without padding (n divisible by w) nothing repeats: the shards are disjoint.
      if (n % w == 0) {
        for (int64_t i = 0; i < n; ++i) EXPECT_EQ(all.count(i), 1u);
      }
      EXPECT_EQ(static_cast<int64_t>(all.size()), per * w);
    }
  }
}

TEST(Sampler, PadRepeatsTheFirstIndicesLikePyTorch) {
  // N=10, W=4, no shuffle: padded order is 0..9,0,1 taken strided.
  auto sh = shards(10, 4, Remainder::pad, false, 0, 0);
  EXPECT_EQ(sh[0], (std::vector<int64_t>{0, 4, 8}));
  EXPECT_EQ(sh[1], (std::vector<int64_t>{1, 5, 9}));
  EXPECT_EQ(sh[2], (std::vector<int64_t>{2, 6, 0}));
  EXPECT_EQ(sh[3], (std::vector<int64_t>{3, 7, 1}));
  // N < W wraps around several times.
  auto tiny = shards(2, 5, Remainder::pad, false, 0, 0);
  for (int r = 0; r < 5; ++r)
    EXPECT_EQ(tiny[static_cast<size_t>(r)], (std::vector<int64_t>{r % 2}));
}

TEST(Sampler, DropGivesEqualDisjointShards) {
  for (int w = 1; w <= 8; ++w) {
    auto sh = shards(23, w, Remainder::drop, true, 9, 2);
    std::set<int64_t> all;
    for (auto& s : sh) {
      EXPECT_EQ(static_cast<int64_t>(s.size()), 23 / w);
      for (int64_t i : s) EXPECT_TRUE(all.insert(i).second) << "duplicate " << i;
    }
    EXPECT_EQ(static_cast<int64_t>(all.size()), (23 / w) * w);
  }
}

TEST(Sampler, ExactModeCoversEverySampleOnce) {
  for (int64_t n : {0, 1, 5, 7, 11, 31, 97, 100}) {
    for (int w = 1; w <= 8; ++w) {
      for (bool shuffle : {false, true}) {
        auto sh = shards(n, w, Remainder::exact, shuffle, 5, 3);
        std::vector<int> seen(static_cast<size_t>(n));
        size_t biggest = 0, smallest = SIZE_MAX;
        for (auto& s : sh) {
          for (int64_t i : s) ++seen[static_cast<size_t>(i)];
          biggest = std::max(biggest, s.size());
          smallest = std::min(smallest, s.size());
        }
        for (int64_t i = 0; i < n; ++i)
          EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << "n=" << n << " w=" << w << " i=" << i;
        EXPECT_LE(biggest - smallest, 1u);
      }
    }
  }
}

TEST(Sampler, EpochChangesPermutationDeterministically) {
  auto a0 = shards(50, 2, Remainder::pad, true, 1, 0);
  auto a1 = shards(50, 2, Remainder::pad, true, 1, 1);
  auto b0 = shards(50, 2, Remainder::pad, true, 1, 0);
  auto c0 = shards(50, 2, Remainder::pad, true, 2, 0);
  EXPECT_EQ(a0, b0);
  EXPECT_NE(a0, a1);
  EXPECT_NE(a0, c0);
  // Going back to an epoch gives its permutation again.
  DistributedSampler s({.dataset_size = 50, .rank = 0, .world_size = 2, .seed = 1});
  s.set_epoch(1);
  s.set_epoch(0);
  EXPECT_EQ(s.shard(), a0[0]);
}

// Each epoch's order is the documented one (sampler.h, rng.h): Fisher-Yates driven by
// Rng(mix_seed(seed, epoch)), rank r taking positions r, r + W, ... One sampler per rank walked
// through epochs 0..5, back to 2, and by load_state to 4 must give exactly that each time,
// whatever epochs came before; the epochs' orders all differ; the ranks' shards of an epoch
// are disjoint and cover [0, N) (N divisible by W: no padding).
TEST(Sampler, EachEpochIsItsSeededPermutationWhateverCameBefore) {
  const int64_t n = 36;
  for (uint64_t seed : {0ull, 7ull}) {
    for (int w = 1; w <= 4; ++w) {
      std::vector<DistributedSampler> ranks;
      for (int r = 0; r < w; ++r)
        ranks.emplace_back(
            SamplerOptions{.dataset_size = n, .rank = r, .world_size = w, .seed = seed});
      std::map<int64_t, std::vector<int64_t>> orders;
      for (int64_t epoch : {0, 1, 2, 3, 4, 5, 2, 4}) {
        std::vector<int64_t> order(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), int64_t{0});
        Rng rng(mix_seed(seed, static_cast<uint64_t>(epoch)));
        fisher_yates(std::span<int64_t>(order), rng);
        orders[epoch] = order;
        const bool resume = orders.size() == 6 && epoch == 4;  // the last one: by load_state
        std::vector<int> seen(static_cast<size_t>(n));
        for (int r = 0; r < w; ++r) {
          auto& s = ranks[static_cast<size_t>(r)];
          if (resume) {
            s.load_state({.epoch = epoch, .offset = 0, .dataset_size = n, .seed = seed});
          } else {
            s.set_epoch(epoch);
          }
          std::vector<int64_t> want;
          for (int64_t k = r; k < n; k += w) want.push_back(order[static_cast<size_t>(k)]);
          EXPECT_EQ(s.shard(), want) << "seed " << seed << ", W " << w << ", rank " << r
                                     << ", epoch " << epoch << (resume ? " (load_state)" : "");
          for (int64_t i : s.shard()) ++seen[static_cast<size_t>(i)];
        }
        for (int64_t i = 0; i < n; ++i)
          EXPECT_EQ(seen[static_cast<size_t>(i)], 1)
              << "sample " << i << ", epoch " << epoch << ", W " << w;
      }
      for (const auto& [a, oa] : orders) {
        for (const auto& [b, ob] : orders) {
          if (a < b) {
            EXPECT_NE(oa, ob) << "epochs " << a << " and " << b << " have the same order";
          }
        }
      }
    }
  }
}

TEST(Sampler, NoShuffleIsIdentityStrided) {
  auto sh = shards(6, 2, Remainder::pad, false, 0, 5);
  EXPECT_EQ(sh[0], (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(sh[1], (std::vector<int64_t>{1, 3, 5}));
}

TEST(Sampler, NextAdvancesAndStopsAtEpochEnd) {
  DistributedSampler s({.dataset_size = 10, .rank = 1, .world_size = 3, .seed = 4});
  auto full = s.shard();
  std::vector<int64_t> got, buf(3);
  while (int64_t k = s.next(buf)) got.insert(got.end(), buf.begin(), buf.begin() + k);
  EXPECT_EQ(got, full);
  EXPECT_EQ(s.next(buf), 0);
  EXPECT_EQ(s.remaining(), 0);
}

TEST(Sampler, ResumesFromEveryPosition) {
  for (Remainder rem : {Remainder::pad, Remainder::drop}) {
    for (int w : {1, 2, 3, 5}) {
      for (int r = 0; r < w; ++r) {
        SamplerOptions o{
            .dataset_size = 37, .rank = r, .world_size = w, .seed = 11, .remainder = rem};
        DistributedSampler ref(o);
        ref.set_epoch(2);
        const auto full = ref.shard();
        for (int64_t k = 0; k <= static_cast<int64_t>(full.size()); ++k) {
          DistributedSampler a(o);
          a.set_epoch(2);
          a.seek(k);
          // Round-trip through the text form a checkpoint stores.
          SamplerState st = SamplerState::parse(a.state().to_string());
          DistributedSampler b(o);
          b.load_state(st);
          EXPECT_EQ(b.epoch(), 2);
          std::vector<int64_t> rest(static_cast<size_t>(b.remaining()));
          b.next(rest);
          EXPECT_EQ(rest, std::vector<int64_t>(full.begin() + k, full.end())) << "k=" << k;
        }
      }
    }
  }
}

TEST(Sampler, ResumeWithAnotherWorldSizeCoversWhatIsLeft) {
  // 2 ranks consume 5 positions each, then 3 ranks finish the epoch (elastic restart).
  const int64_t n = 40;
  std::multiset<int64_t> seen;
  SamplerState st;
  for (int r = 0; r < 2; ++r) {
    DistributedSampler s({.dataset_size = n, .rank = r, .world_size = 2, .seed = 8});
    std::vector<int64_t> buf(5);
    s.next(buf);
    seen.insert(buf.begin(), buf.end());
    st = s.state();
  }
  EXPECT_EQ(st.offset, 10);
  for (int r = 0; r < 3; ++r) {
    DistributedSampler s(
        {.dataset_size = n, .rank = r, .world_size = 3, .seed = 8, .remainder = Remainder::exact});
    s.load_state(st);
    auto rest = s.shard();
    seen.insert(rest.begin(), rest.end());
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen.count(i), 1u) << i;
}

TEST(Sampler, RejectsStateFromAnotherDatasetOrSeed) {
  DistributedSampler s({.dataset_size = 10, .seed = 1});
  SamplerState st = s.state();
  st.dataset_size = 11;
  try {
    s.load_state(st);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("dataset_size=11"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SamplerState::parse("epoch=1 offset=x"), DataError);
  EXPECT_THROW(SamplerState::parse("epoch=1 offset=2 dataset_size=3 seed=4 shuffle=1 junk"),
               DataError);
  EXPECT_THROW(DistributedSampler({.dataset_size = 10, .rank = 2, .world_size = 2}),
               InvalidArgument);
  EXPECT_THROW(s.seek(11), InvalidArgument);
}

}  // namespace
}  // namespace lockstep::data
