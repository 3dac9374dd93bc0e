#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/methods/binarize.h"
#include "server/methods/ternarize.h"
#include "tests/unit/method_test_util.h"

namespace bonsai::methods {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatEq;
using ::testing::Pointwise;
using testing::OwnedWeight;

absl::StatusOr<MethodOutcome> RunMethod(const std::string& name, OwnedWeight& w,
                                  bool per_channel = false) {
  MethodConfig config;
  config.method = name;
  config.per_channel = per_channel;
  auto method = CreateMethod(config);
  if (!method.ok()) return method.status();
  return (*method)->Apply(w.view(), nullptr);
}

TEST(BinarizeTest, EveryWeightBecomesItsChannelsMeanAbsTimesItsSignWithZeroPositive) {
  OwnedWeight w("fc.weight", {2, 4}, {1, -2, 0, 5, -0.0f, 0, -1, 3});
  auto outcome = RunMethod("binarize", w);
  ASSERT_TRUE(outcome.ok());
  EXPECT_THAT(w.values.values, Pointwise(FloatEq(), std::vector<float>{2, -2, 2, 2, 1, 1, -1, 1}));
  EXPECT_EQ(outcome->packing.packing, formats::Packing::kBinary);
  EXPECT_THAT(outcome->packing.scales, ElementsAre(2, 1));
}

TEST(BinarizeTest, ScalesAreOnePerOutputChannelOfATransposedWeight) {
  OwnedWeight w("matmul.B", {2, 2}, {1, -4, -3, 2}, formats::WeightLayout{1, 0});
  auto outcome = RunMethod("binarize", w);
  ASSERT_TRUE(outcome.ok());
  EXPECT_THAT(outcome->packing.scales, ElementsAre(2, 3));
  EXPECT_THAT(w.values.values, Pointwise(FloatEq(), std::vector<float>{2, -3, -2, 3}));
}

TEST(TernarizeTest, AbsmeanPerTensorRoundsToMinusOneZeroOrOneTimesGamma) {
  // gamma = mean|W| = 1; W / gamma rounds to -1, 0, 0, 1, 1, -1 (clipped).
  OwnedWeight w("fc.weight", {2, 3}, {-1.2f, 0.3f, -0.4f, 0.8f, 2.5f, -0.8f});
  auto outcome = RunMethod("ternarize", w);
  ASSERT_TRUE(outcome.ok());
  EXPECT_THAT(w.values.values, Pointwise(FloatEq(), std::vector<float>{-1, 0, 0, 1, 1, -1}));
  EXPECT_EQ(outcome->packing.packing, formats::Packing::kTernary);
  EXPECT_THAT(outcome->packing.scales, ElementsAre(FloatEq(1.0f)));
}

TEST(TernarizeTest, PerChannelUsesOneGammaPerOutputChannel) {
  // Row 0: gamma 0.5 -> -1, 0, 1. Row 1: gamma 4 -> 0, 1, -1 (1.0/4 rounds to 0).
  OwnedWeight w("fc.weight", {2, 3}, {-0.8f, 0.1f, 0.6f, 1, 5, -6});
  auto outcome = RunMethod("ternarize", w, /*per_channel=*/true);
  ASSERT_TRUE(outcome.ok());
  EXPECT_THAT(w.values.values, Pointwise(FloatEq(), std::vector<float>{-0.5f, 0, 0.5f, 0, 4, -4}));
  EXPECT_THAT(outcome->packing.scales, ElementsAre(FloatEq(0.5f), FloatEq(4.0f)));
}

TEST(TernarizeTest, AllZeroTensorStaysZero) {
  OwnedWeight w("fc.weight", {2, 2}, {0, 0, 0, 0});
  ASSERT_TRUE(RunMethod("ternarize", w).ok());
  EXPECT_THAT(w.values.values, ElementsAre(0, 0, 0, 0));
}

}  // namespace
}  // namespace bonsai::methods
