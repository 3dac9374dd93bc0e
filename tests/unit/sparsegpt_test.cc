#include "server/methods/sparsegpt.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/tensor/magnitude_select.h"
#include "tests/unit/method_test_util.h"

namespace bonsai::methods {
namespace {

using testing::CorrelatedInputs;
using testing::CountZeros;
using testing::GramOf;
using testing::OutputError;
using testing::OwnedWeight;
using testing::RandomNormal;

struct SparseGpt : testing::ConfiguredMethod<SparseGpt> {
  explicit SparseGpt(double sparsity, int block = 32) {
    config.method = "sparsegpt";
    config.sparsity = sparsity;
    config.block_size = block;
  }
};

TEST(SparseGptTest, MaskHasExactlyTheRequestedSparsity) {
  for (auto [d, sparsity] : {std::pair<int64_t, double>{96, 0.5}, {100, 0.3}, {70, 0.9}}) {
    const int64_t out = 32, n = 256;
    OwnedWeight w("fc.weight", {out, d}, RandomNormal(out * d, 1));
    w.calibration = GramOf(CorrelatedInputs(n, d, 2), n, d);
    auto outcome = SparseGpt(sparsity).On(w);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_EQ(CountZeros(w.values.values),
              static_cast<int64_t>(tensor::PruneCount(sparsity, out * d)))
        << "d=" << d;
  }
}

TEST(SparseGptTest, ReconstructsTheLayerOutputBetterThanMagnitudePruning) {
  const int64_t out = 48, d = 128, n = 512;
  const std::vector<float> x = CorrelatedInputs(n, d, 3);
  const std::vector<float> before = RandomNormal(out * d, 4);
  OwnedWeight w("fc.weight", {out, d}, before);
  w.calibration = GramOf(x, n, d);
  auto outcome = SparseGpt(0.5).On(w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();

  std::vector<float> magnitude = before;
  tensor::PruneSmallestMagnitudes(absl::MakeSpan(magnitude), out * d / 2);
  const double sparsegpt_error = OutputError(before, w.values.values, x, out, n, d);
  const double magnitude_error = OutputError(before, magnitude, x, out, n, d);
  EXPECT_LT(sparsegpt_error, 0.8 * magnitude_error);
  // The report's error comes from the Gram matrix alone and must agree.
  EXPECT_NEAR(outcome->reconstruction_error, sparsegpt_error, 2e-3 * sparsegpt_error);
}

TEST(SparseGptTest, TwoFourPatternHoldsInEveryGroup) {
  const int64_t out = 16, d = 64, n = 200;
  OwnedWeight w("fc.weight", {out, d}, RandomNormal(out * d, 5));
  w.calibration = GramOf(CorrelatedInputs(n, d, 6), n, d);
  auto outcome = SparseGpt(0).NM(2, 4).On(w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < d; g += 4) {
      int zeros = 0;
      for (int t = 0; t < 4; ++t) zeros += w.values.values[o * d + g + t] == 0.0f;
      EXPECT_EQ(zeros, 2) << "row " << o << " group " << g;
    }
  EXPECT_EQ(outcome->packing.packing, formats::Packing::kNM);
}

TEST(SparseGptTest, TransposedStorageGivesTheSameResultInPlace) {
  testing::TransposedPair w = testing::MakeTransposedPair(24, 80, 160, 7);
  auto ra = SparseGpt(0.6, 16).On(w.rows);
  auto rb = SparseGpt(0.6, 16).On(w.cols);
  ASSERT_TRUE(ra.ok() && rb.ok());
  int mask_differences = 0;
  for (int64_t o = 0; o < w.out; ++o)
    for (int64_t j = 0; j < w.d; ++j) {
      const float va = w.Row(o, j), vb = w.Col(o, j);
      mask_differences += (va == 0.0f) != (vb == 0.0f);
      if (va != 0.0f && vb != 0.0f) {
        EXPECT_NEAR(va, vb, 1e-3);
      }
    }
  EXPECT_LE(mask_differences, 2);  // float summation order may flip a near tie
  EXPECT_NEAR(ra->reconstruction_error, rb->reconstruction_error, 1e-3);
}

TEST(SparseGptTest, ConvNMGroupsInputChannelsAtOneKernelPosition) {
  const int64_t out = 6, in = 8, k = 4, d = in * k, n = 300;
  const std::vector<float> x = CorrelatedInputs(n, d, 9);  // unfold order columns
  const std::vector<float> before = RandomNormal(out * d, 10);
  OwnedWeight w("conv.weight", {out, in, 2, 2}, before, formats::WeightLayout{0, 1});
  w.calibration = GramOf(x, n, d);
  auto outcome = SparseGpt(0, 8).NM(2, 4).On(w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t kp = 0; kp < k; ++kp)
      for (int64_t g = 0; g < in; g += 4) {
        int zeros = 0;
        for (int t = 0; t < 4; ++t) zeros += w.values.values[(o * in + g + t) * k + kp] == 0.0f;
        EXPECT_EQ(zeros, 2);
      }
  const double actual = OutputError(before, w.values.values, x, out, n, d);
  EXPECT_NEAR(outcome->reconstruction_error, actual, 2e-3 * actual);
}

TEST(SparseGptTest, UnevenlySpacedColumnsAreHandledThroughACopy) {
  // ConvTranspose-like [in, out, kh, kw]: column (i, k) of output channel o
  // lives at (i * out + o) * kernel + k.
  const int64_t in = 6, out = 5, kernel = 3, d = in * kernel, n = 120;
  const std::vector<float> x = CorrelatedInputs(n, d, 11);
  const std::vector<float> storage = RandomNormal(in * out * kernel, 12);
  auto as_matrix = [&](const std::vector<float>& s) {
    std::vector<float> m(out * d);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i)
        for (int64_t kp = 0; kp < kernel; ++kp)
          m[o * d + i * kernel + kp] = s[(i * out + o) * kernel + kp];
    return m;
  };
  OwnedWeight w("deconv.weight", {in, out, kernel, 1}, storage, formats::WeightLayout{1, 0});
  w.calibration = GramOf(x, n, d);
  auto outcome = SparseGpt(0.5, 4).On(w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(CountZeros(w.values.values), out * d / 2);
  const double actual = OutputError(as_matrix(storage), as_matrix(w.values.values), x, out, n, d);
  EXPECT_NEAR(outcome->reconstruction_error, actual, 2e-3 * actual);
}

TEST(SparseGptTest, InputsThatAreAlwaysZeroGetZeroWeights) {
  const int64_t out = 4, d = 16, n = 40;
  std::vector<float> x = CorrelatedInputs(n, d, 13);
  for (int64_t s = 0; s < n; ++s) x[s * d + 5] = 0.0f;
  const std::vector<float> before = RandomNormal(out * d, 14);
  OwnedWeight w("fc.weight", {out, d}, before);
  w.calibration = GramOf(x, n, d);
  auto outcome = SparseGpt(0.25, 8).On(w);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (int64_t o = 0; o < out; ++o) EXPECT_EQ(w.values.values[o * d + 5], 0.0f);
  // The error's Cholesky-factor terms must not count the dead input either.
  const double actual = OutputError(before, w.values.values, x, out, n, d);
  EXPECT_NEAR(outcome->reconstruction_error, actual, 2e-3 * actual);
}

TEST(SparseGptTest, TickReturningFalseCancels) {
  const int64_t out = 4, d = 64, n = 80;
  OwnedWeight w("fc.weight", {out, d}, RandomNormal(out * d, 15));
  w.calibration = GramOf(CorrelatedInputs(n, d, 16), n, d);
  int ticks = 0;
  auto outcome = SparseGpt(0.5, 16).On(w, [&](double fraction) {
    ++ticks;
    EXPECT_GT(fraction, 0.0);
    return fraction < 0.5;
  });
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(ticks, 2);
}

TEST(SparseGptTest, OutOfRangeOptionsAreInvalidArgument) {
  SparseGpt bad_damp(0.5);
  bad_damp.config.dampening = -1;
  EXPECT_EQ(CreateMethod(bad_damp.config).status().code(), absl::StatusCode::kInvalidArgument);
  SparseGpt bad_nm(0.5);
  bad_nm.config.n = 2;
  EXPECT_EQ(CreateMethod(bad_nm.config).status().code(), absl::StatusCode::kInvalidArgument);
  SparseGpt bad_sparsity(1.0);
  EXPECT_EQ(CreateMethod(bad_sparsity.config).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bonsai::methods
