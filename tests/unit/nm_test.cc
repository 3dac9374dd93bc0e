#include "server/methods/nm.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/method_test_util.h"

namespace bonsai::methods {
namespace {

using ::testing::HasSubstr;
using testing::OwnedWeight;
using testing::RandomNormal;

MethodConfig NM(int n, int m) {
  MethodConfig config;
  config.method = "nm";
  config.n = n;
  config.m = m;
  return config;
}

absl::StatusOr<MethodOutcome> RunNM(const MethodConfig& config, OwnedWeight& w) {
  absl::StatusOr<std::unique_ptr<Method>> method = CreateMethod(config);
  if (!method.ok()) return method.status();
  return (*method)->Apply(w.view(), nullptr);
}

// Checks one group given by its elements' indices: exactly n survivors, and
// they are the n largest |w| of the original group (ties: lower index).
void ExpectGroupKeepsLargest(const std::vector<float>& before, const std::vector<float>& after,
                             const std::vector<int64_t>& idx, int n) {
  int kept = 0;
  for (size_t a = 0; a < idx.size(); ++a) {
    int better = 0;
    for (size_t b = 0; b < idx.size(); ++b) {
      const float fa = std::fabs(before[idx[a]]), fb = std::fabs(before[idx[b]]);
      better += fb > fa || (fb == fa && b < a);
    }
    const bool should_keep = better < n;
    EXPECT_EQ(after[idx[a]], should_keep ? before[idx[a]] : 0.0f) << "element " << idx[a];
    kept += should_keep;
  }
  EXPECT_EQ(kept, n);
}

TEST(NMTest, TwoFourKeepsTheTwoLargestOfEveryGroupOfFourInputs) {
  const std::vector<float> data = {0.1f, -0.9f, 0.5f, 0.2f,  3, 2, 1, -4,
                                   -1,   1,     -1,   1,     0, 0, 0, 0};
  OwnedWeight w("fc.weight", {2, 8}, data);
  absl::StatusOr<MethodOutcome> outcome = RunNM(NM(2, 4), w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_THAT(w.values.values, ::testing::ElementsAre(0, -0.9f, 0.5f, 0, 3, 0, 0, -4,
                                                      -1, 1, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(outcome->packing.packing, formats::Packing::kNM);
  EXPECT_EQ(outcome->packing.n, 2);
  EXPECT_EQ(outcome->packing.m, 4);
  EXPECT_EQ(outcome->note, "");
}

TEST(NMTest, FourEightPatternHoldsInEveryGroupOfARandomLayer) {
  const int64_t out = 16, in = 64;
  const std::vector<float> before = RandomNormal(out * in, 7);
  OwnedWeight w("fc.weight", {out, in}, before);
  ASSERT_TRUE(RunNM(NM(4, 8), w).ok());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < in; g += 8) {
      std::vector<int64_t> idx;
      for (int t = 0; t < 8; ++t) idx.push_back(o * in + g + t);
      ExpectGroupKeepsLargest(before, w.values.values, idx, 4);
    }
}

TEST(NMTest, ConvGroupsAreInputChannelsAtTheSameKernelPosition) {
  const int64_t out = 3, in = 8, kh = 2, kw = 3;
  const std::vector<float> before = RandomNormal(out * in * kh * kw, 11);
  OwnedWeight w("conv.weight", {out, in, kh, kw}, before, formats::WeightLayout{0, 1});
  ASSERT_TRUE(RunNM(NM(2, 4), w).ok());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < kh * kw; ++k)
      for (int64_t g = 0; g < in; g += 4) {
        std::vector<int64_t> idx;
        for (int t = 0; t < 4; ++t) idx.push_back((o * in + g + t) * kh * kw + k);
        ExpectGroupKeepsLargest(before, w.values.values, idx, 2);
      }
}

TEST(NMTest, TransposedGemmWeightIsGroupedAlongItsInputAxis) {
  // ONNX MatMul B is [in, out]: groups run down a column of the storage.
  const int64_t in = 8, out = 5;
  const std::vector<float> before = RandomNormal(in * out, 3);
  OwnedWeight w("matmul.B", {in, out}, before, formats::WeightLayout{1, 0});
  ASSERT_TRUE(RunNM(NM(2, 4), w).ok());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < in; g += 4) {
      std::vector<int64_t> idx;
      for (int t = 0; t < 4; ++t) idx.push_back((g + t) * out + o);
      ExpectGroupKeepsLargest(before, w.values.values, idx, 2);
    }
}

TEST(NMTest, ChannelTailThatDoesNotFillAGroupStaysDenseAndIsNoted) {
  const int64_t out = 2, in = 30;
  const std::vector<float> before = RandomNormal(out * in, 5);
  OwnedWeight w("fc.weight", {out, in}, before);
  absl::StatusOr<MethodOutcome> outcome = RunNM(NM(2, 8), w);
  ASSERT_TRUE(outcome.ok());
  EXPECT_THAT(outcome->note, HasSubstr("last 6 of 30 input channels left dense"));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 24; i < 30; ++i) EXPECT_EQ(w.values.values[o * in + i], before[o * in + i]);
  EXPECT_EQ(testing::CountZeros(w.values.values), out * 3 * 6);
}

TEST(NMTest, InvalidPatternIsInvalidArgumentSayingWhatIsAllowed) {
  absl::StatusOr<std::unique_ptr<Method>> method = CreateMethod(NM(4, 4));
  ASSERT_FALSE(method.ok());
  EXPECT_EQ(method.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(method.status().message(), HasSubstr("nm needs 0 < n < m <= 32; got n=4 m=4"));
  EXPECT_FALSE(CreateMethod(NM(1, 64)).ok());
  EXPECT_FALSE(CreateMethod(NM(0, 4)).ok());
}

}  // namespace
}  // namespace bonsai::methods
