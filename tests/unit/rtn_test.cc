#include "server/methods/rtn.h"

#include <bit>
#include <cmath>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/methods/quant_grid.h"
#include "tests/unit/method_test_util.h"

namespace bonsai::methods {
namespace {

using ::testing::HasSubstr;
using testing::CorrelatedInputs;
using testing::GramOf;
using testing::OutputError;
using testing::OwnedWeight;
using testing::RandomNormal;

absl::StatusOr<MethodOutcome> Rtn(OwnedWeight& w, int bits, int64_t group_size,
                                  bool symmetric = false) {
  MethodConfig config;
  config.method = "rtn";
  config.bits = bits;
  config.group_size = group_size;
  config.symmetric = symmetric;
  auto method = CreateMethod(config);
  if (!method.ok()) return method.status();
  return (*method)->Apply(w.view(), nullptr);
}

std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> out;
  for (float x : v) out.push_back(std::bit_cast<uint32_t>(x));
  return out;
}

TEST(QuantGridTest, AsymmetricGridSpansTheRangeWithZeroOnACode) {
  // lo = -1, hi = 2 at 2 bits: scale 1, zero 1, codes -1, 0, 1, 2.
  const QuantSpec spec{.bits = 2, .symmetric = false, .group_size = 0};
  const Grid grid = ChooseGrid(-1.0f, 2.0f, spec);
  EXPECT_EQ(grid.scale, 1.0f);
  EXPECT_EQ(grid.zero, 1.0f);
  for (auto [w, want] : {std::pair{-1.0f, -1.0f}, {2.0f, 2.0f}, {0.4f, 0.0f}, {0.5f, 0.0f},
                         {1.5f, 2.0f}, {-0.6f, -1.0f}, {7.0f, 2.0f}, {-9.0f, -1.0f},
                         {1e30f, 2.0f}, {-1e30f, -1.0f}, {-0.0f, 0.0f}}) {
    EXPECT_EQ(Quantize(w, grid, spec.max_code()), want) << w;
  }
}

TEST(QuantGridTest, AGroupOfOneSignStillHoldsZero) {
  const QuantSpec spec{.bits = 4, .symmetric = false, .group_size = 0};
  const Grid grid = ChooseGrid(0.0f, 3.0f, spec);  // all weights >= 0
  EXPECT_EQ(grid.zero, 0.0f);
  EXPECT_EQ(Quantize(0.0f, grid, spec.max_code()), 0.0f);
  EXPECT_EQ(Quantize(3.0f, grid, spec.max_code()), 3.0f);
}

TEST(QuantGridTest, SymmetricGridPutsMaxAbsOnACodeAndFixesTheZeroPoint) {
  const QuantSpec spec{.bits = 4, .symmetric = true, .group_size = 0};
  const Grid grid = ChooseGrid(-3.5f, 1.0f, spec);
  EXPECT_EQ(grid.zero, 8.0f);
  EXPECT_EQ(grid.scale, 0.5f);  // 3.5 / 7
  EXPECT_EQ(Quantize(-3.5f, grid, spec.max_code()), -3.5f);
  EXPECT_EQ(Quantize(3.5f, grid, spec.max_code()), 3.5f);
  EXPECT_EQ(Quantize(0.25f, grid, spec.max_code()), 0.0f);  // half rounds to even
  EXPECT_EQ(Quantize(0.75f, grid, spec.max_code()), 1.0f);
}

TEST(QuantGridTest, AllZeroGroupStaysZero) {
  for (bool symmetric : {false, true}) {
    const QuantSpec spec{.bits = 3, .symmetric = symmetric, .group_size = 0};
    const Grid grid = ChooseGrid(0.0f, 0.0f, spec);
    EXPECT_EQ(grid.scale, 1.0f);
    EXPECT_EQ(Quantize(0.0f, grid, spec.max_code()), 0.0f);
  }
}

TEST(QuantGridTest, RoundHalfEvenIsNearbyintUpToTwoToThe22) {
  for (float x : {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 0.49999997f, 254.5f, 4194303.5f, -4194304.0f,
                  1e-30f, 3.4999998f}) {
    EXPECT_EQ(RoundHalfEven(x), std::nearbyint(x)) << x;
  }
}

TEST(QuantGridTest, SpanRuleEqualsScalarRuleBitForBit) {
  std::vector<float> values = RandomNormal(1001, 1, 3.0f);
  const QuantSpec spec{.bits = 3, .symmetric = false, .group_size = 0};
  float lo, hi;
  RangeWithZero(values, &lo, &hi);
  const Grid grid = ChooseGrid(lo, hi, spec);
  std::vector<float> scalar = values;
  for (float& v : scalar) v = Quantize(v, grid, spec.max_code());
  QuantizeSpan(absl::MakeSpan(values), grid, spec.max_code());
  EXPECT_EQ(Bits(values), Bits(scalar));
}

TEST(RtnTest, EachRowAndGroupTakesAtMostTwoToTheBitsValues) {
  for (int bits : {2, 3, 4, 8}) {
    const int64_t out = 8, d = 96, group = 32;
    OwnedWeight w("fc.weight", {out, d}, RandomNormal(out * d, 2));
    ASSERT_TRUE(Rtn(w, bits, group).ok());
    for (int64_t o = 0; o < out; ++o)
      for (int64_t g = 0; g < d; g += group) {
        std::set<float> levels(w.values.values.begin() + o * d + g,
                               w.values.values.begin() + o * d + g + group);
        EXPECT_LE(levels.size(), size_t{1} << bits) << "bits " << bits;
      }
  }
}

TEST(RtnTest, GroupSizeZeroIsOneGridPerOutputChannel) {
  const int64_t out = 4, d = 50;
  const std::vector<float> before = RandomNormal(out * d, 3);
  OwnedWeight w("fc.weight", {out, d}, before);
  ASSERT_TRUE(Rtn(w, 4, 0).ok());
  std::vector<float> want = before;
  for (int64_t o = 0; o < out; ++o)
    QuantizeRow(absl::MakeSpan(want).subspan(o * d, d), {.bits = 4, .group_size = 0});
  EXPECT_EQ(Bits(w.values.values), Bits(want));
}

TEST(RtnTest, AGroupSizeThatDoesNotDivideLeavesAShorterLastGroupAndSaysSo) {
  const int64_t out = 3, d = 100;
  const std::vector<float> before = RandomNormal(out * d, 4);
  OwnedWeight w("fc.weight", {out, d}, before);
  auto outcome = Rtn(w, 3, 32);
  ASSERT_TRUE(outcome.ok());
  EXPECT_THAT(outcome->note, HasSubstr("last group of each row has 4"));
  std::vector<float> want = before;
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t g = 0; g < d; g += 32) {
      auto group = absl::MakeSpan(want).subspan(o * d + g, std::min<int64_t>(32, d - g));
      float lo, hi;
      RangeWithZero(group, &lo, &hi);
      QuantizeSpan(group, ChooseGrid(lo, hi, {.bits = 3}), 7.0f);
    }
  }
  EXPECT_EQ(Bits(w.values.values), Bits(want));
}

TEST(RtnTest, TransposedAndConvStorageGroupAlongTheReductionAxis) {
  const int64_t out = 6, d = 40;
  const std::vector<float> rows = RandomNormal(out * d, 5);
  std::vector<float> cols(out * d);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < d; ++j) cols[j * out + o] = rows[o * d + j];
  OwnedWeight a("fc.weight", {out, d}, rows);
  OwnedWeight b("matmul.B", {d, out}, cols, formats::WeightLayout{1, 0});
  // [out, in, kh, kw] = [6, 10, 2, 2]: a row is its 40 weights in unfold order.
  OwnedWeight c("conv.weight", {out, 10, 2, 2}, rows, formats::WeightLayout{0, 1});
  ASSERT_TRUE(Rtn(a, 4, 16).ok());
  ASSERT_TRUE(Rtn(b, 4, 16).ok());
  ASSERT_TRUE(Rtn(c, 4, 16).ok());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < d; ++j) {
      EXPECT_EQ(b.values.values[j * out + o], a.values.values[o * d + j]);
    }
  EXPECT_EQ(Bits(c.values.values), Bits(a.values.values));
}

TEST(RtnTest, WithCalibrationReportsTheReconstructionError) {
  const int64_t out = 16, d = 64, n = 200;
  const std::vector<float> x = CorrelatedInputs(n, d, 6);
  const std::vector<float> before = RandomNormal(out * d, 7);
  OwnedWeight w("fc.weight", {out, d}, before);
  w.calibration = GramOf(x, n, d);
  auto outcome = Rtn(w, 3, 32);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  const double actual = OutputError(before, w.values.values, x, out, n, d);
  EXPECT_NEAR(outcome->reconstruction_error, actual, 1e-4 * actual);

  OwnedWeight plain("fc.weight", {out, d}, before);
  auto without = Rtn(plain, 3, 32);
  ASSERT_TRUE(without.ok());
  EXPECT_LT(without->reconstruction_error, 0.0);  // not computed
  EXPECT_EQ(Bits(plain.values.values), Bits(w.values.values));
}

TEST(RtnTest, NonFiniteWeightIsInvalidArgumentNamingTheTensor) {
  OwnedWeight w("fc.weight", {2, 4}, {1, 2, NAN, 4, 5, 6, 7, 8});
  auto outcome = Rtn(w, 4, 0);
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(outcome.status().message(), HasSubstr("fc.weight"));
}

TEST(RtnTest, BitsOutsideTwoThreeFourEightAreRefusedNamingTheChoices) {
  for (const char* method : {"rtn", "gptq", "sparsegpt"}) {
    for (int bits : {1, 5, 16}) {
      MethodConfig config;
      config.method = method;
      config.bits = bits;
      config.sparsity = 0.5;
      auto created = CreateMethod(config);
      EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument) << method << bits;
      EXPECT_THAT(created.status().message(), HasSubstr("2, 3, 4 or 8")) << method;
    }
  }
}

}  // namespace
}  // namespace bonsai::methods
