// The report's per-tensor figures against a plain double-precision loop.
#include "server/tensor/float_tensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace bonsai::tensor {
namespace {

TEST(ChangeAccumulator, MatchesAPlainLoopOverPiecesOfAnyLength) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (size_t n : {0u, 1u, 3u, 4u, 7u, 1023u, 1024u, 5001u}) {
    std::vector<float> before(n), after(n);
    for (size_t i = 0; i < n; ++i) {
      before[i] = i % 5 == 0 ? 0.0f : normal(rng);
      after[i] = i % 3 == 0 ? 0.0f : before[i] * 1.25f;
    }
    double diff = 0, norm = 0;
    uint64_t nonzero_before = 0, nonzero_after = 0;
    for (size_t i = 0; i < n; ++i) {
      diff += (double(before[i]) - after[i]) * (double(before[i]) - after[i]);
      norm += double(before[i]) * before[i];
      nonzero_before += before[i] != 0.0f;
      nonzero_after += after[i] != 0.0f;
    }
    ChangeAccumulator change;
    const size_t cut = n / 3;  // fed in two pieces
    change.Add(absl::MakeConstSpan(before).subspan(0, cut), absl::MakeConstSpan(after).subspan(0, cut));
    change.Add(absl::MakeConstSpan(before).subspan(cut), absl::MakeConstSpan(after).subspan(cut));
    const ChangeStats& stats = change.stats();
    EXPECT_EQ(stats.nonzero_before, nonzero_before) << n;
    EXPECT_EQ(stats.nonzero_after, nonzero_after) << n;
    EXPECT_NEAR(stats.diff2, diff, 1e-12 * (1 + diff)) << n;
    EXPECT_NEAR(stats.norm2_before, norm, 1e-12 * (1 + norm)) << n;
    EXPECT_NEAR(stats.relative_error(), norm > 0 ? std::sqrt(diff / norm) : 0.0, 1e-12) << n;
  }
}

TEST(CountNonZero, CountsAcrossBlocksAndTail) {
  std::vector<float> values(3000, 1.0f);
  for (size_t i = 0; i < values.size(); i += 7) values[i] = 0.0f;
  values[2999] = -0.0f;  // negative zero is zero
  uint64_t expected = 0;
  for (float v : values) expected += v != 0.0f;
  EXPECT_EQ(CountNonZero(values), expected);
}

}  // namespace
}  // namespace bonsai::tensor
