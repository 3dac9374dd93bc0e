#include "server/methods/wanda.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/method_test_util.h"

namespace bonsai::methods {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::GramOf;
using testing::OwnedWeight;
using testing::RandomNormal;

absl::StatusOr<MethodOutcome> RunWanda(OwnedWeight& w, int n = 0, int m = 0) {
  MethodConfig config;
  config.method = "wanda";
  config.sparsity = w.sparsity;
  config.n = n;
  config.m = m;
  auto method = CreateMethod(config);
  if (!method.ok()) return method.status();
  return (*method)->Apply(w.view(), nullptr);
}

CalibrationStats DiagonalGram(std::vector<float> diag) {
  CalibrationStats stats;
  stats.dim = static_cast<int64_t>(diag.size());
  stats.samples = 1;
  stats.gram.assign(diag.size() * diag.size(), 0.0f);
  for (size_t i = 0; i < diag.size(); ++i) stats.gram[i * diag.size() + i] = diag[i];
  return stats;
}

TEST(WandaTest, ScoresWeightsByTheirInputNormWithinEachRow) {
  // |w| alone would prune columns 0 and 1 of row 0; the input norms
  // (10, 10, 1, 1) make columns 2 and 3 the least important. Row 1 scores
  // 10, 10, 4, 50: the tie at 10 prunes the lower index.
  OwnedWeight w("fc.weight", {2, 4}, {0.5f, -0.6f, 2, 3, 1, 1, 4, -50});
  w.calibration = DiagonalGram({100, 100, 1, 1});
  w.sparsity = 0.5;
  auto outcome = RunWanda(w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_THAT(w.values.values, ElementsAre(0.5f, -0.6f, 0, 0, 0, 1, 0, -50));
  EXPECT_EQ(outcome->packing.packing, formats::Packing::kSparseBitmask);
}

TEST(WandaTest, EveryRowLosesTheSameNumberOfWeights) {
  const int64_t out = 12, d = 40, n = 64;
  const std::vector<float> x = RandomNormal(n * d, 1);
  OwnedWeight w("fc.weight", {out, d}, RandomNormal(out * d, 2));
  w.calibration = GramOf(x, n, d);
  w.sparsity = 0.3;  // round(0.3 * 40) = 12 per row
  ASSERT_TRUE(RunWanda(w).ok());
  for (int64_t o = 0; o < out; ++o) {
    int zeros = 0;
    for (int64_t j = 0; j < d; ++j) zeros += w.values.values[o * d + j] == 0.0f;
    EXPECT_EQ(zeros, 12) << "row " << o;
  }
}

TEST(WandaTest, ReportsTheReconstructionErrorOfTheCalibrationInputs) {
  const int64_t out = 8, d = 24, n = 50;
  const std::vector<float> x = RandomNormal(n * d, 3);
  const std::vector<float> before = RandomNormal(out * d, 4);
  OwnedWeight w("fc.weight", {out, d}, before);
  w.calibration = GramOf(x, n, d);
  w.sparsity = 0.5;
  auto outcome = RunWanda(w);
  ASSERT_TRUE(outcome.ok());
  const double expected = testing::OutputError(before, w.values.values, x, out, n, d);
  EXPECT_NEAR(outcome->reconstruction_error, expected, 1e-4 * expected + 1e-7);
}

TEST(WandaTest, NMKeepsTheBestScoresOfEveryGroup) {
  OwnedWeight w("fc.weight", {1, 8}, {1, 2, 3, 4, 4, 3, 2, 1});
  w.calibration = DiagonalGram({16, 1, 1, 1, 1, 1, 1, 16});  // norms 4,1,1,1,1,1,1,4
  auto outcome = RunWanda(w, 2, 4);
  ASSERT_TRUE(outcome.ok());
  EXPECT_THAT(w.values.values, ElementsAre(1, 0, 0, 4, 4, 0, 0, 1));
  EXPECT_EQ(outcome->packing.packing, formats::Packing::kNM);
}

TEST(WandaTest, MissingCalibrationIsInvalidArgumentNamingTheTensor) {
  OwnedWeight w("layers.0.fc.weight", {2, 4}, RandomNormal(8, 5));
  w.sparsity = 0.5;
  auto outcome = RunWanda(w);
  ASSERT_FALSE(outcome.ok());
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(outcome.status().message(), HasSubstr("'layers.0.fc.weight'"));
  EXPECT_THAT(outcome.status().message(), HasSubstr("send a calibration"));
}

TEST(WandaTest, CalibrationOfAnotherDimensionIsInvalidArgumentNamingBoth) {
  OwnedWeight w("fc.weight", {2, 4}, RandomNormal(8, 5));
  w.calibration = DiagonalGram({1, 1, 1});
  auto outcome = RunWanda(w);
  ASSERT_FALSE(outcome.ok());
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(outcome.status().message(), HasSubstr("dimension 3"));
  EXPECT_THAT(outcome.status().message(), HasSubstr("reduction length is 4"));
}

}  // namespace
}  // namespace bonsai::methods
