#include "server/methods/abs_sum.h"

#include <bit>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "server/methods/weight_matrix.h"
#include "tests/unit/method_test_util.h"
#include "tests/unit/weight_cases.h"

namespace bonsai::methods {
namespace {

// The documented order, written as plainly as it reads.
double FourLaneSum(const std::vector<float>& row) {
  double lane[4] = {0, 0, 0, 0};
  for (size_t c = 0; c < row.size(); ++c) lane[c % 4] += std::fabs(double{row[c]});
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

::testing::AssertionResult SameBits(double actual, double expected) {
  if (std::bit_cast<uint64_t>(actual) == std::bit_cast<uint64_t>(expected))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << std::hexfloat << actual << " vs " << expected;
}

TEST(AbsSumTest, EveryLayoutGivesEachRowTheSameBitsInTheDocumentedOrder) {
  uint32_t seed = 300;
  for (const testing::LayoutCase& layout : testing::EveryLayout()) {
    int64_t count = 1;
    for (int64_t d : layout.shape) count *= d;
    testing::OwnedWeight w("w", layout.shape,
                           testing::Weights(testing::Fill::kNormal, count, ++seed),
                           layout.layout);
    const MatrixGeometry g = *GeometryOf(w.view());
    const std::vector<float>& v = w.values.values;
    const std::vector<double> sums = RowAbsSums(g, v);
    double all = 0.0;
    for (int64_t r = 0; r < g.rows; ++r) {
      std::vector<float> row;
      ForEachInRow(g, r, [&](int64_t at) { row.push_back(v[at]); });
      const double expected = FourLaneSum(row);
      EXPECT_TRUE(SameBits(sums[r], expected)) << layout.name << " row " << r;
      EXPECT_TRUE(SameBits(RowAbsSum(row), expected)) << layout.name << " row " << r;
      all += expected;
    }
    EXPECT_TRUE(SameBits(AbsSumOfAllRows(g, v), all)) << layout.name;
  }
}

TEST(AbsSumTest, RowsOfEveryLengthAreAccurateToTheDoubleRoundingBound) {
  // Against a sum in long double (64-bit mantissa here), within n·u·Σ|w|
  // for doubles: the order changes last bits, never the value.
  for (size_t n : {1, 3, 4, 5, 17, 1000, 65537}) {
    std::vector<float> row = testing::Weights(testing::Fill::kNormal, n, 40 + n);
    long double exact = 0;
    for (float x : row) exact += std::fabs(static_cast<long double>(x));
    const double bound = n * 0x1p-53 * static_cast<double>(exact);
    EXPECT_NEAR(RowAbsSum(row), static_cast<double>(exact), bound) << n;
  }
}

TEST(AbsSumTest, NonFiniteValuesCarryThrough) {
  std::vector<float> data(4096, 1.25f);
  EXPECT_TRUE(SameBits(RowAbsSum(data), 5120.0));
  data[3000] = -INFINITY;
  EXPECT_TRUE(SameBits(RowAbsSum(data), INFINITY));
  data[3001] = std::nanf("");
  EXPECT_TRUE(std::isnan(RowAbsSum(data)));
  EXPECT_TRUE(SameBits(RowAbsSum(std::vector<float>(512, -0.0f)), 0.0));
}

}  // namespace
}  // namespace bonsai::methods
