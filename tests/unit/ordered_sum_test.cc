#include "server/methods/ordered_sum.h"

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "server/methods/weight_matrix.h"
#include "tests/unit/method_test_util.h"
#include "tests/unit/weight_cases.h"

namespace bonsai::methods {
namespace {

double PlainSum(double sum, absl::Span<const float> values) {
  for (float v : values) sum += std::fabs(v);
  return sum;
}

::testing::AssertionResult SameBits(double actual, double expected) {
  if (std::bit_cast<uint64_t>(actual) == std::bit_cast<uint64_t>(expected))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << std::hexfloat << actual << " vs " << expected;
}

// Data that makes the shortcuts fail in every way: wide exponent ranges,
// few mantissa bits (exact halves when added to a large sum), integers,
// zeros of both signs and subnormals.
std::vector<std::vector<float>> HardData(uint32_t seed, size_t count) {
  std::mt19937 gen(seed);
  std::vector<std::vector<float>> sets;
  for (int scale : {-20, 0, 12}) {
    std::normal_distribution<float> normal(0.0f, std::ldexp(1.0f, scale));
    std::vector<float> v(count);
    for (float& x : v) x = normal(gen);
    sets.push_back(v);
    for (int bits : {1, 3, 7}) {  // bf16 keeps 7
      std::vector<float> rounded = v;
      for (float& x : rounded)
        x = std::bit_cast<float>(std::bit_cast<uint32_t>(x) & ~((1u << (23 - bits)) - 1));
      sets.push_back(rounded);
    }
  }
  std::uniform_int_distribution<int> small(-8, 8), exponent(-149, 60), pick(0, 9);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::vector<float> halves(count), wide(count);
  for (float& x : halves) x = small(gen) * 0.5f;
  for (float& x : wide) {
    const int p = pick(gen);
    x = p == 0 ? 0.0f : p == 1 ? -0.0f : std::ldexp(unit(gen), exponent(gen));
  }
  sets.push_back(halves);
  sets.push_back(wide);
  // Sums just past exactness: ones with 2^-30-sized values whose last bits
  // round away once the sum passes 2.
  std::vector<float> two_scales(count);
  for (float& x : two_scales)
    x = pick(gen) == 0 ? 1.0f + unit(gen) / 2 : std::ldexp(1.5f + unit(gen) / 2, -30);
  sets.push_back(two_scales);
  return sets;
}

TEST(AddAbsInOrderTest, GivesThePlainLoopsBitsForRowsAndLongRunningSums) {
  for (const std::vector<float>& data : HardData(7, 1 << 17)) {
    for (size_t length : {1, 7, 64, 300, 4096, 20000, 1 << 17}) {
      double running = 0.0, expected_running = 0.0;
      for (size_t first = 0; first + length <= data.size(); first += length) {
        const auto row = absl::MakeConstSpan(data).subspan(first, length);
        ASSERT_TRUE(SameBits(AddAbsInOrder(0.0, row), PlainSum(0.0, row))) << "length " << length;
        running = AddAbsInOrder(running, row);
        expected_running = PlainSum(expected_running, row);
        ASSERT_TRUE(SameBits(running, expected_running)) << "length " << length;
      }
    }
  }
}

TEST(AddAbsInOrderTest, AnExactHalfAddedToAnOddSumRoundsToEven) {
  // Above 2^52 the last bit is 1: 2^52 + 1 + 0.5 rounds up to the even
  // 2^52 + 2, and every later + 0.5 rounds back down to it.
  const std::vector<float> halves(1024, 0.5f);
  const double start = 0x1p52 + 1;
  EXPECT_TRUE(SameBits(AddAbsInOrder(start, halves), 0x1p52 + 2));
  EXPECT_TRUE(SameBits(AddAbsInOrder(start + 1, halves), PlainSum(start + 1, halves)));
}

TEST(AddAbsInOrderTest, TiesThatCarryTheSumIntoTheNextBinadeAreAddedOneByOne) {
  // From 2^53 - 8 (last bit 1), each 1 + 0.5 adds 2 through a tie to even,
  // reaching 2^53 where the last bit is 2 and a further + 1 is a tie that
  // stays: the sum ends at 2^53, although its addends round to 7 below it.
  std::vector<float> data = {1, 0.5f, 1, 0.5f, 1, 0.5f, 1, 0.5f, 1, 1, 1};
  data.resize(256, 0.0f);
  EXPECT_TRUE(SameBits(PlainSum(0x1p53 - 8, data), 0x1p53));
  EXPECT_TRUE(SameBits(AddAbsInOrder(0x1p53 - 8, data), 0x1p53));
}

TEST(AddAbsInOrderTest, NonFiniteValuesAndSumsGiveThePlainLoopsResult) {
  std::vector<float> data(4096, 1.25f);
  EXPECT_TRUE(SameBits(AddAbsInOrder(0.0, data), 5120.0));
  data[3000] = -INFINITY;
  EXPECT_TRUE(SameBits(AddAbsInOrder(0.0, data), INFINITY));
  data[3001] = std::nanf("");
  EXPECT_TRUE(std::isnan(AddAbsInOrder(0.0, data)));
  EXPECT_TRUE(std::isnan(AddAbsInOrder(std::nan(""), std::vector<float>(512, 1.0f))));
  EXPECT_TRUE(SameBits(AddAbsInOrder(-0.0, std::vector<float>(512, -0.0f)), 0.0));
  EXPECT_TRUE(SameBits(AddAbsInOrder(0.0, std::vector<float>(512, 3e38f)),
                       PlainSum(0.0, std::vector<float>(512, 3e38f))));
}

TEST(RowAbsSumsTest, EveryLayoutSumsEachRowAndTheWholeWeightInRowOrder) {
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
      double row = 0.0;
      ForEachInRow(g, r, [&](int64_t at) {
        row += std::fabs(v[at]);
        all += std::fabs(v[at]);
      });
      EXPECT_TRUE(SameBits(sums[r], row)) << layout.name << " row " << r;
    }
    EXPECT_TRUE(SameBits(AddAbsOfAllRows(0.0, g, v), all)) << layout.name;
  }
}

}  // namespace
}  // namespace bonsai::methods
