#include "server/methods/structured.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/method_test_util.h"

namespace bonsai::methods {
namespace {

using ::testing::ElementsAre;
using testing::OwnedWeight;

TEST(StructuredTest, ZeroesExactlyTheRoundedFractionOfOutputChannelsWithSmallestNorms) {
  // Row L2 norms: 5, 1, 3, 2, 4 -> 40% of 5 channels = the two smallest: 1, 3.
  OwnedWeight w("fc.weight", {5, 2}, {3, 4, 1, 0, 0, 3, 2, 0, 0, -4});
  w.sparsity = 0.4;
  MethodConfig config;
  config.method = "structured";
  config.norm = NormKind::kL2;
  auto method = CreateMethod(config);
  ASSERT_TRUE(method.ok());
  auto outcome = (*method)->Apply(w.view(), nullptr);
  ASSERT_TRUE(outcome.ok());
  EXPECT_THAT(w.values.values, ElementsAre(3, 4, 0, 0, 0, 3, 0, 0, 0, -4));
  EXPECT_THAT(outcome->note, ::testing::HasSubstr("2 of 5 output channels zeroed"));
}

TEST(StructuredTest, NormKindChangesTheRanking) {
  // Row 0: L1 4, L2 2.83; row 1: L1 3, L2 3.
  OwnedWeight w("fc.weight", {2, 2}, {2, 2, 3, 0});
  EXPECT_THAT(ChannelsToRemove(w.view(), NormKind::kL1, 0.5), ElementsAre(1));
  EXPECT_THAT(ChannelsToRemove(w.view(), NormKind::kL2, 0.5), ElementsAre(0));
}

TEST(StructuredTest, TiedNormsRemoveTheLowerIndexFirst) {
  OwnedWeight w("fc.weight", {4, 1}, {1, -1, 1, 2});
  EXPECT_THAT(ChannelsToRemove(w.view(), NormKind::kL1, 0.5), ElementsAre(0, 1));
}

TEST(StructuredTest, OutputChannelsFollowTheLayout) {
  // [in, out] storage: output channel o is column o.
  OwnedWeight w("matmul.B", {2, 3}, {1, 9, 2, 1, 9, 2}, formats::WeightLayout{1, 0});
  EXPECT_THAT(ChannelsToRemove(w.view(), NormKind::kL2, 0.34), ElementsAre(0));
  OwnedWeight conv("conv.weight", {3, 1, 2, 2}, {1, 1, 1, 1, 0, 0, 0, 1, 5, 5, 5, 5});
  EXPECT_THAT(ChannelsToRemove(conv.view(), NormKind::kL1, 0.6), ElementsAre(0, 1));
}

// L2 norms 1.000000005 and 1: the same float, different doubles. Ranked in
// float they would tie and the lower index would go; physical mode ranks in
// double, and both modes must remove the same channel.
TEST(StructuredTest, NormsThatRoundToOneFloatStillRankByTheirExactValue) {
  OwnedWeight w("fc.weight", {2, 2}, {1.0f, 1e-4f, 1.0f, 0.0f});
  const std::vector<double> norms = ChannelNorms(w.view(), NormKind::kL2);
  ASSERT_EQ(norms.size(), 2u);
  ASSERT_EQ(static_cast<float>(norms[0]), static_cast<float>(norms[1]));
  EXPECT_GT(norms[0], norms[1]);
  EXPECT_THAT(ChannelsToRemove(w.view(), NormKind::kL2, 0.5), ElementsAre(1));
}

TEST(StructuredTest, LowestChannelsBreaksTiesByIndexAndReturnsThemAscending) {
  EXPECT_THAT(LowestChannels(std::vector<double>{3, 1, 2, 1}, 3), ElementsAre(1, 2, 3));
  EXPECT_THAT(LowestChannels(std::vector<double>{2, 2, 2}, 2), ElementsAre(0, 1));
  EXPECT_THAT(LowestChannels(std::vector<double>{5, 4}, 0), ElementsAre());
}

TEST(StructuredTest, AlwaysKeepsOneChannel) {
  OwnedWeight w("fc.weight", {2, 2}, {1, 2, 3, 4});
  EXPECT_THAT(ChannelsToRemove(w.view(), NormKind::kL2, 0.9), ElementsAre(0));
}

}  // namespace
}  // namespace bonsai::methods
