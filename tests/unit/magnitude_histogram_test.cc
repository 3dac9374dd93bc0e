// The exact histograms a replica sends for a global threshold over shards:
// summed over shards, they pin the k-th smallest |w|, and masking each shard
// with its share of the ties gives the masks of one selection over all.
#include "server/tensor/magnitude_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "server/tensor/magnitude_select.h"

namespace bonsai::tensor {
namespace {

// Few distinct magnitudes, so the threshold always has ties across shards.
std::vector<float> TiedWeights(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  const float levels[] = {0.5f, 0.25f, 1.5f, 3.0f, 0.125f, 1e-30f, 0.0f};
  std::uniform_int_distribution<int> pick(0, 6), sign(0, 1);
  std::vector<float> values(n);
  for (float& v : values) v = levels[pick(rng)] * (sign(rng) ? -1.0f : 1.0f);
  return values;
}

std::map<uint32_t, uint64_t> Sum(const std::vector<MagnitudeHistogram>& histograms) {
  std::map<uint32_t, uint64_t> merged;
  std::vector<uint32_t> values;
  std::vector<uint64_t> counts;
  for (const auto& h : histograms) {
    h.ExportSparse(values, counts);
    for (size_t i = 0; i < values.size(); ++i) merged[values[i]] += counts[i];
  }
  return merged;
}

// The bucket holding the rank-th (1-based) element and how many lie below.
std::pair<uint32_t, uint64_t> Kth(const std::map<uint32_t, uint64_t>& hist, uint64_t rank) {
  uint64_t below = 0;
  for (const auto& [value, count] : hist) {
    if (below + count >= rank) return {value, below};
    below += count;
  }
  return {0, below};
}

TEST(MagnitudeHistogram, ShardedCutMasksLikeOneSelection) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::vector<std::vector<float>> shards;
    std::vector<float> all;
    for (int s = 0; s < 4; ++s) {
      shards.push_back(TiedWeights(100 + 37 * s * seed % 211, seed * 10 + s));
      all.insert(all.end(), shards.back().begin(), shards.back().end());
    }
    const uint64_t k = PruneCount(0.1 * (seed % 10), all.size());
    if (k == 0) continue;
    std::vector<MagnitudeHistogram> coarse;
    for (const auto& s : shards) {
      coarse.push_back(MagnitudeHistogram::Coarse());
      coarse.back().Add(s);
    }
    const auto [bucket, below_bucket] = Kth(Sum(coarse), k);
    std::vector<MagnitudeHistogram> fine;
    for (const auto& s : shards) {
      fine.push_back(MagnitudeHistogram::Fine(bucket));
      fine.back().Add(s);
    }
    const auto [low, below_low] = Kth(Sum(fine), k - below_bucket);
    const uint32_t threshold = (bucket << 16) | low;
    uint64_t ties_left = k - below_bucket - below_low;

    std::vector<float> masked;
    for (size_t s = 0; s < shards.size(); ++s) {
      const uint64_t equal = fine[s].count(low);
      const uint64_t mine = std::min(equal, ties_left);
      ties_left -= mine;
      MagnitudeMasker masker({threshold, mine, false});
      masker.Apply(absl::MakeSpan(shards[s]));
      masked.insert(masked.end(), shards[s].begin(), shards[s].end());
    }
    std::vector<float> reference = all;
    PruneSmallestMagnitudes(absl::MakeSpan(reference), k);
    ASSERT_EQ(masked.size(), reference.size());
    for (size_t i = 0; i < masked.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(masked[i]), std::bit_cast<uint32_t>(reference[i]))
          << "seed " << seed << " element " << i;
    }
  }
}

TEST(MagnitudeHistogram, FineCountsOnlyItsBucketAndExportsSparse) {
  std::vector<float> values = {1.0f, -1.0f, 1.0000001f, 2.0f, 0.0f, -0.0f};
  auto fine = MagnitudeHistogram::Fine(std::bit_cast<uint32_t>(1.0f) >> 16);
  fine.Add(values);
  EXPECT_EQ(fine.total(), 3u);
  std::vector<uint32_t> keys;
  std::vector<uint64_t> counts;
  fine.ExportSparse(keys, counts);
  EXPECT_EQ(keys, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(counts, (std::vector<uint64_t>{2, 1}));
  auto coarse = MagnitudeHistogram::Coarse();
  coarse.Add(values);
  EXPECT_EQ(coarse.count(0), 2u);  // +0 and -0 are one magnitude
  EXPECT_EQ(coarse.total(), values.size());
}

}  // namespace
}  // namespace bonsai::tensor
