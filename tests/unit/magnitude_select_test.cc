// Exact-k magnitude selection against a full sort: the sampled bracket, and
// the radix fallback on data built to defeat the bracket.
#include "server/tensor/magnitude_select.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace bonsai::tensor {
namespace {

std::vector<float> RandomWeights(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  return values;
}

// The reference: sort indices by (|w|, index) and zero the first k.
std::vector<float> PruneBySorting(std::vector<float> values, uint64_t k) {
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::fabs(values[a]) < std::fabs(values[b]);
  });
  for (uint64_t i = 0; i < k; ++i) values[order[i]] = 0.0f;
  return values;
}

uint64_t Zeros(const std::vector<float>& values) {
  return std::count(values.begin(), values.end(), 0.0f);
}

TEST(MagnitudeSelect, PruneCountRoundsHalfToEvenLikePython) {
  EXPECT_EQ(PruneCount(0.5, 5), 2u);   // round(2.5) == 2
  EXPECT_EQ(PruneCount(0.5, 7), 4u);   // round(3.5) == 4
  EXPECT_EQ(PruneCount(0.3, 10), 3u);
  EXPECT_EQ(PruneCount(0.0, 10), 0u);
  EXPECT_EQ(PruneCount(0.999, 10), 10u);
}

TEST(MagnitudeSelect, MatchesFullSortOnRandomData) {
  for (uint32_t seed = 0; seed < 5; ++seed) {
    for (double sparsity : {0.1, 0.5, 0.77, 0.9}) {
      auto values = RandomWeights(10007, seed);
      const uint64_t k = PruneCount(sparsity, values.size());
      auto expected = PruneBySorting(values, k);
      PruneSmallestMagnitudes(absl::MakeSpan(values), k);
      EXPECT_EQ(values, expected) << "seed " << seed << " sparsity " << sparsity;
      EXPECT_EQ(Zeros(values), k);
    }
  }
}

TEST(MagnitudeSelect, TiesArePrunedInIndexOrder) {
  std::vector<float> values = {0.5f, -1.0f, 1.0f, 0.5f, -0.5f, 2.0f};
  PruneSmallestMagnitudes(absl::MakeSpan(values), 2);
  EXPECT_EQ(values, (std::vector<float>{0.0f, -1.0f, 1.0f, 0.0f, -0.5f, 2.0f}));
}

TEST(MagnitudeSelect, ExistingZerosCountTowardsTheTarget) {
  std::vector<float> values = {0.0f, 3.0f, 0.0f, 1.0f, 2.0f, -0.0f};
  PruneSmallestMagnitudes(absl::MakeSpan(values), 4);
  EXPECT_EQ(Zeros(values), 4u);
  EXPECT_EQ(values[4], 2.0f);
  EXPECT_EQ(values[1], 3.0f);
}

TEST(MagnitudeSelect, AllEqualValuesGiveExactlyK) {
  std::vector<float> values(1000, 0.25f);
  PruneSmallestMagnitudes(absl::MakeSpan(values), 333);
  EXPECT_EQ(Zeros(values), 333u);
  EXPECT_EQ(values[332], 0.0f);
  EXPECT_EQ(values[333], 0.25f);
}

TEST(MagnitudeSelect, GlobalSelectionOverSpansMatchesSortOfTheConcatenation) {
  auto a = RandomWeights(3001, 11), b = RandomWeights(5003, 12), c = RandomWeights(17, 13);
  std::vector<float> all;
  for (auto* part : {&a, &b, &c}) all.insert(all.end(), part->begin(), part->end());
  const uint64_t k = PruneCount(0.6, all.size());
  const auto expected = PruneBySorting(all, k);

  MagnitudeSelector selector(k);
  for (int pass = 0; selector.NeedsPass(pass); ++pass) {
    for (auto* part : {&a, &b, &c}) selector.Observe(pass, *part);
    selector.FinishPass(pass);
  }
  MagnitudeMasker masker(*selector.cut());
  std::vector<float> got;
  for (auto* part : {&a, &b, &c}) {
    masker.Apply(absl::MakeSpan(*part));
    got.insert(got.end(), part->begin(), part->end());
  }
  EXPECT_EQ(got, expected);
}

TEST(MagnitudeSelect, KOfZeroOrAllIsHandled) {
  auto values = RandomWeights(100, 3);
  auto copy = values;
  PruneSmallestMagnitudes(absl::MakeSpan(values), 0);
  EXPECT_EQ(values, copy);
  PruneSmallestMagnitudes(absl::MakeSpan(values), 100);
  EXPECT_EQ(Zeros(values), 100u);
}

}  // namespace
// Runs the selector over `parts` and says which passes it needed.
std::vector<float> PruneOverSpans(std::vector<std::vector<float>> parts, uint64_t k,
                                  int* passes, BracketLimits limits = {}) {
  MagnitudeSelector selector(k, limits);
  *passes = 0;
  for (int pass = 0; selector.NeedsPass(pass); ++pass, ++*passes) {
    for (auto& part : parts) selector.Observe(pass, part);
    selector.FinishPass(pass);
  }
  MagnitudeMasker masker(*selector.cut());
  std::vector<float> got;
  for (auto& part : parts) {
    masker.Apply(absl::MakeSpan(part));
    got.insert(got.end(), part.begin(), part.end());
  }
  return got;
}

std::vector<float> Concatenation(const std::vector<std::vector<float>>& parts) {
  std::vector<float> all;
  for (const auto& part : parts) all.insert(all.end(), part.begin(), part.end());
  return all;
}

// Over a million weights the sample is thinned and the bracket pass runs;
// with normal weights it settles the cut in two passes.
TEST(MagnitudeSelect, LargeInputsSettleInTheBracketPass) {
  const std::vector<std::vector<float>> parts = {RandomWeights(700001, 21),
                                                 RandomWeights(1300003, 22)};
  const auto all = Concatenation(parts);
  for (double sparsity : {0.01, 0.5, 0.93}) {
    const uint64_t k = PruneCount(sparsity, all.size());
    int passes = 0;
    EXPECT_EQ(PruneOverSpans(parts, k, &passes), PruneBySorting(all, k)) << sparsity;
    EXPECT_EQ(passes, 2) << sparsity;
  }
}

// Whatever the bracket cannot settle (here: more weights inside it than its
// budget) the radix passes do, with the same exact result.
TEST(MagnitudeSelect, WhenTheBracketOverflowsTheRadixFallbackIsExact) {
  const std::vector<std::vector<float>> parts = {RandomWeights(300007, 31),
                                                 RandomWeights(200003, 32)};
  const auto all = Concatenation(parts);
  const BracketLimits small{.sample_target = 1000, .max_inside = 100};
  for (double sparsity : {0.2, 0.5}) {
    const uint64_t k = PruneCount(sparsity, all.size());
    int passes = 0;
    EXPECT_EQ(PruneOverSpans(parts, k, &passes, small), PruneBySorting(all, k)) << sparsity;
    EXPECT_EQ(passes, 4) << sparsity;
  }
}

// Equal magnitudes by the million: the ties are pruned in index order.
TEST(MagnitudeSelect, MassTiesAreExact) {
  std::vector<float> ties(2000000, 0.25f);
  for (size_t i = 0; i < ties.size(); i += 3) ties[i] = -0.25f;
  for (size_t i = 0; i < ties.size(); i += 1000) ties[i] = 1.0f;
  const uint64_t k = PruneCount(0.5, ties.size());
  int passes = 0;
  EXPECT_EQ(PruneOverSpans({ties}, k, &passes), PruneBySorting(ties, k));
}

TEST(MagnitudeSelect, SkewedDataStaysExact) {
  // Magnitudes spread over many octaves, with runs of equal values.
  std::mt19937 rng(5);
  std::vector<float> values(1500007);
  for (float& v : values) {
    const float magnitude = std::ldexp(1.0f, static_cast<int>(rng() % 40) - 30);
    v = (rng() & 1) ? magnitude : -magnitude;
  }
  for (double sparsity : {0.3, 0.5, 0.999}) {
    const uint64_t k = PruneCount(sparsity, values.size());
    int passes = 0;
    EXPECT_EQ(PruneOverSpans({values}, k, &passes), PruneBySorting(values, k)) << sparsity;
  }
}

}  // namespace bonsai::tensor

namespace bonsai::tensor {
namespace {

// Spans over 4M weights are split across two cores when one is idle (as in
// this test binary); the result must be the serial one, ties in index order.
TEST(MagnitudeSelect, LongSpansSplitAcrossCoresGiveTheSameCut) {
  std::vector<float> normal = RandomWeights(5000011, 41);
  std::vector<float> steps(5000011);
  std::mt19937 rng(42);
  for (float& v : steps) v = 0.25f * static_cast<float>(static_cast<int>(rng() % 9) - 4);
  for (const auto* values : {&normal, &steps}) {
    for (double sparsity : {0.3, 0.5}) {
      const uint64_t k = PruneCount(sparsity, values->size());
      int passes = 0;
      EXPECT_EQ(PruneOverSpans({*values}, k, &passes), PruneBySorting(*values, k)) << sparsity;
      // Normal weights settle in the bracket pass, so the split collection
      // is what decided; the steps' ties overflow it and take the radix.
      if (values == &normal) EXPECT_EQ(passes, 2) << sparsity;
    }
  }
}

}  // namespace
}  // namespace bonsai::tensor
