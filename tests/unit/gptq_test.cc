#include "server/methods/gptq.h"

#include <bit>
#include <cmath>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/method_test_util.h"

namespace bonsai::methods {
namespace {

using ::testing::HasSubstr;
using testing::CorrelatedInputs;
using testing::CountZeros;
using testing::GramOf;
using testing::OutputError;
using testing::OwnedWeight;
using testing::RandomNormal;

struct Quantizer : testing::ConfiguredMethod<Quantizer> {
  explicit Quantizer(const char* method, int bits, int64_t group_size) {
    config.method = method;
    config.bits = bits;
    config.group_size = group_size;
    config.block_size = 32;
  }
  Quantizer& ActOrder() {
    config.act_order = true;
    return *this;
  }
};

// Distinct values of row o's weights in columns [first, first + count).
size_t Levels(const std::vector<float>& v, int64_t d, int64_t o, int64_t first, int64_t count) {
  return std::set<float>(v.begin() + o * d + first, v.begin() + o * d + first + count).size();
}

TEST(GptqTest, ReconstructsTheLayerOutputMuchBetterThanRoundToNearest) {
  const int64_t out = 32, d = 128, n = 512;
  const std::vector<float> x = CorrelatedInputs(n, d, 1);
  const std::vector<float> before = RandomNormal(out * d, 2);
  for (int bits : {2, 3, 4, 8}) {
    OwnedWeight g("fc.weight", {out, d}, before), r("fc.weight", {out, d}, before);
    g.calibration = GramOf(x, n, d);
    r.calibration = GramOf(x, n, d);
    auto gptq = Quantizer("gptq", bits, 32).On(g);
    auto rtn = Quantizer("rtn", bits, 32).On(r);
    ASSERT_TRUE(gptq.ok() && rtn.ok()) << gptq.status() << rtn.status();
    EXPECT_LT(gptq->reconstruction_error, 0.6 * rtn->reconstruction_error) << bits;
    // The report's error comes from the sweep's own terms and must agree.
    const double actual = OutputError(before, g.values.values, x, out, n, d);
    EXPECT_NEAR(gptq->reconstruction_error, actual, 2e-3 * actual) << bits;
  }
}

TEST(GptqTest, EveryRowAndGroupLiesOnOneGrid) {
  const int64_t out = 12, d = 96, n = 300;
  for (bool act_order : {false, true}) {
    OwnedWeight w("fc.weight", {out, d}, RandomNormal(out * d, 3));
    w.calibration = GramOf(CorrelatedInputs(n, d, 4), n, d);
    Quantizer q("gptq", 3, 24);
    if (act_order) q.ActOrder();
    ASSERT_TRUE(q.On(w).ok());
    for (int64_t o = 0; o < out; ++o)
      for (int64_t g = 0; g < d; g += 24) EXPECT_LE(Levels(w.values.values, d, o, g, 24), 8u);
  }
}

TEST(GptqTest, ActOrderQuantizesByDecreasingHessianDiagonalAndHelpsUnequalInputs) {
  const int64_t out = 24, d = 64, n = 400;
  std::vector<float> x = CorrelatedInputs(n, d, 5);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t j = 0; j < d; ++j) x[s * d + j] *= 0.2f + 3.0f * ((j * 37) % d) / d;
  const std::vector<float> before = RandomNormal(out * d, 6);
  OwnedWeight plain("fc.weight", {out, d}, before), ordered("fc.weight", {out, d}, before);
  plain.calibration = GramOf(x, n, d);
  ordered.calibration = GramOf(x, n, d);
  auto a = Quantizer("gptq", 3, 0).On(plain);
  auto b = Quantizer("gptq", 3, 0).ActOrder().On(ordered);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(b->reconstruction_error, a->reconstruction_error);
  const double actual = OutputError(before, ordered.values.values, x, out, n, d);
  EXPECT_NEAR(b->reconstruction_error, actual, 2e-3 * actual);
}

TEST(GptqTest, BlockSizeChangesOnlyTheOrderOfAdditions) {
  // Groups of 24 straddle blocks of 16 and 40: grids must still come from
  // the groups' current values, so the results agree but for rounding.
  const int64_t out = 16, d = 96, n = 300;
  const std::vector<float> x = CorrelatedInputs(n, d, 7);
  const std::vector<float> before = RandomNormal(out * d, 8);
  std::vector<std::vector<float>> results;
  std::vector<double> errors;
  for (int block : {16, 40, 96}) {
    for (bool act_order : {false, true}) {
      OwnedWeight w("fc.weight", {out, d}, before);
      w.calibration = GramOf(x, n, d);
      Quantizer q("gptq", 4, 24);
      q.Block(block);
      if (act_order) q.ActOrder();
      auto outcome = q.On(w);
      ASSERT_TRUE(outcome.ok());
      results.push_back(w.values.values);
      errors.push_back(outcome->reconstruction_error);
    }
  }
  // The grids' scales differ in their last bits, so every value may; a code
  // that rounds the other way moves its value by a whole step (~0.1 here).
  for (size_t i = 2; i < results.size(); ++i) {
    int steps = 0;
    for (size_t k = 0; k < before.size(); ++k)
      steps += std::fabs(results[i][k] - results[i % 2][k]) > 1e-4f;
    EXPECT_LE(steps, static_cast<int>(before.size()) / 50) << i;
    EXPECT_NEAR(errors[i], errors[i % 2], 0.02 * errors[i % 2]) << i;
  }
}

TEST(GptqTest, TransposedStorageGivesTheSameResult) {
  testing::TransposedPair w = testing::MakeTransposedPair(20, 48, 160, 9);
  auto ra = Quantizer("gptq", 4, 16).On(w.rows);
  auto rb = Quantizer("gptq", 4, 16).On(w.cols);
  ASSERT_TRUE(ra.ok() && rb.ok());
  for (int64_t o = 0; o < w.out; ++o)
    for (int64_t j = 0; j < w.d; ++j) EXPECT_EQ(w.Row(o, j), w.Col(o, j));
  EXPECT_EQ(ra->reconstruction_error, rb->reconstruction_error);
}

TEST(GptqTest, RunsAreByteIdentical) {
  const int64_t out = 32, d = 80, n = 200;
  const std::vector<float> x = CorrelatedInputs(n, d, 11);
  const std::vector<float> before = RandomNormal(out * d, 12);
  std::vector<uint32_t> first;
  for (int run = 0; run < 3; ++run) {
    OwnedWeight w("fc.weight", {out, d}, before);
    w.calibration = GramOf(x, n, d);
    ASSERT_TRUE(Quantizer("gptq", 3, 16).ActOrder().On(w).ok());
    std::vector<uint32_t> bits;
    for (float v : w.values.values) bits.push_back(std::bit_cast<uint32_t>(v));
    if (run == 0) first = bits;
    EXPECT_EQ(bits, first);
  }
}

TEST(GptqTest, InputsThatAreAlwaysZeroGetZeroWeights) {
  const int64_t out = 4, d = 16, n = 40;
  std::vector<float> x = CorrelatedInputs(n, d, 13);
  for (int64_t s = 0; s < n; ++s) x[s * d + 5] = 0.0f;
  const std::vector<float> before = RandomNormal(out * d, 14);
  OwnedWeight w("fc.weight", {out, d}, before);
  w.calibration = GramOf(x, n, d);
  auto outcome = Quantizer("gptq", 4, 8).On(w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (int64_t o = 0; o < out; ++o) EXPECT_EQ(w.values.values[o * d + 5], 0.0f);
  const double actual = OutputError(before, w.values.values, x, out, n, d);
  EXPECT_NEAR(outcome->reconstruction_error, actual, 2e-3 * actual);
}

TEST(GptqTest, WithoutCalibrationIsInvalidArgumentSayingWhatToSend) {
  OwnedWeight w("fc.weight", {4, 8}, RandomNormal(32, 15));
  auto outcome = Quantizer("gptq", 4, 0).On(w);
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(outcome.status().message(),
              HasSubstr("gptq needs calibration data for tensor 'fc.weight'"));
}

TEST(GptqTest, TickReturningFalseCancels) {
  OwnedWeight w("fc.weight", {4, 64}, RandomNormal(256, 16));
  w.calibration = GramOf(CorrelatedInputs(80, 64, 17), 80, 64);
  auto outcome = Quantizer("gptq", 4, 16).Block(16).On(w, [](double f) { return f < 0.5; });
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kCancelled);
}

TEST(SparseGptQuantTest, TwoFourAndFourBitsHoldTogether) {
  const int64_t out = 16, d = 64, n = 300;
  const std::vector<float> x = CorrelatedInputs(n, d, 18);
  const std::vector<float> before = RandomNormal(out * d, 19);
  OwnedWeight joint("fc.weight", {out, d}, before);
  joint.calibration = GramOf(x, n, d);
  auto outcome = Quantizer("sparsegpt", 4, 32).NM(2, 4).On(joint);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t g = 0; g < d; g += 4) {
      int zeros = 0;
      for (int t = 0; t < 4; ++t) zeros += joint.values.values[o * d + g + t] == 0.0f;
      EXPECT_GE(zeros, 2);
    }
    for (int64_t g = 0; g < d; g += 32) EXPECT_LE(Levels(joint.values.values, d, o, g, 32), 16u);
  }
  // Packed, the zeros are 4-bit codes like the rest: smaller than the N:M
  // encoding of float values, and what the quantized layouts store.
  EXPECT_EQ(outcome->packing.packing, formats::Packing::kQuantized);
  ASSERT_NE(outcome->packing.quant, nullptr);
  EXPECT_EQ(outcome->packing.quant->groups, d / 32);
  const double actual = OutputError(before, joint.values.values, x, out, n, d);
  EXPECT_NEAR(outcome->reconstruction_error, actual, 2e-3 * actual);

}

TEST(SparseGptQuantTest, OnePassBeatsPruningFirstAndRoundingAfterAtThreeBits) {
  const int64_t out = 16, d = 128, n = 400;
  const std::vector<float> x = CorrelatedInputs(n, d, 24);
  const std::vector<float> before = RandomNormal(out * d, 25);
  OwnedWeight joint("fc.weight", {out, d}, before), pruned("fc.weight", {out, d}, before);
  joint.calibration = GramOf(x, n, d);
  pruned.calibration = GramOf(x, n, d);
  ASSERT_TRUE(Quantizer("sparsegpt", 3, 0).NM(2, 4).On(joint).ok());
  ASSERT_TRUE(Quantizer("sparsegpt", 0, 0).NM(2, 4).On(pruned).ok());
  OwnedWeight rounded("fc.weight", {out, d}, pruned.values.values);
  ASSERT_TRUE(Quantizer("rtn", 3, 0).On(rounded).ok());
  EXPECT_LT(OutputError(before, joint.values.values, x, out, n, d),
            OutputError(before, rounded.values.values, x, out, n, d));
}

TEST(SparseGptQuantTest, ConvTwoFourKeepsItsGroupsAndTheNaturalQuantGroups) {
  // N:M sweeps a Conv weight kernel position by kernel position, while the
  // quantization groups run along the unfold order: both must hold.
  const int64_t out = 6, in = 8, k = 4, d = in * k, n = 300;
  const std::vector<float> x = CorrelatedInputs(n, d, 20);
  const std::vector<float> before = RandomNormal(out * d, 21);
  OwnedWeight w("conv.weight", {out, in, 2, 2}, before, formats::WeightLayout{0, 1});
  w.calibration = GramOf(x, n, d);
  auto outcome = Quantizer("sparsegpt", 3, 16).NM(2, 4).On(w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t kp = 0; kp < k; ++kp)
      for (int64_t g = 0; g < in; g += 4) {
        int zeros = 0;
        for (int t = 0; t < 4; ++t) zeros += w.values.values[(o * in + g + t) * k + kp] == 0.0f;
        EXPECT_GE(zeros, 2);
      }
    for (int64_t g = 0; g < d; g += 16) EXPECT_LE(Levels(w.values.values, d, o, g, 16), 8u);
  }
  const double actual = OutputError(before, w.values.values, x, out, n, d);
  EXPECT_NEAR(outcome->reconstruction_error, actual, 2e-3 * actual);
}

TEST(SparseGptQuantTest, UnstructuredPrunesItsShareAndQuantizesTheRest) {
  const int64_t out = 16, d = 64, n = 300;
  const std::vector<float> x = CorrelatedInputs(n, d, 22);
  OwnedWeight w("fc.weight", {out, d}, RandomNormal(out * d, 23));
  w.calibration = GramOf(x, n, d);
  Quantizer q("sparsegpt", 4, 0);
  q.config.sparsity = 0.5;
  ASSERT_TRUE(q.On(w).ok());
  EXPECT_GE(CountZeros(w.values.values), out * d / 2);
  for (int64_t o = 0; o < out; ++o) EXPECT_LE(Levels(w.values.values, d, o, 0, d), 16u);
}

TEST(SparseGptQuantTest, ActOrderIsRefusedSayingItIsGptqs) {
  MethodConfig config;
  config.method = "sparsegpt";
  config.sparsity = 0.5;
  config.act_order = true;
  auto created = CreateMethod(config);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(created.status().message(), HasSubstr("gptq"));
}

}  // namespace
}  // namespace bonsai::methods
