// Binarize's and ternarize's fast paths (rows summed in blocks, thresholds
// instead of divisions, storage order for [in, out]) against their plain
// rules, bit for bit, on every layout.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "server/methods/binarize.h"
#include "server/methods/ternarize.h"
#include "server/methods/weight_matrix.h"
#include "tests/unit/method_test_util.h"
#include "tests/unit/weight_cases.h"

namespace bonsai::methods {
namespace {

using testing::EveryFill;
using testing::EveryLayout;
using testing::OwnedWeight;

int64_t CountOf(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

double PlainAbsSum(const MatrixGeometry& g, const std::vector<float>& v, int64_t first,
                   int64_t end) {
  double sum = 0.0;
  for (int64_t r = first; r < end; ++r)
    ForEachInRow(g, r, [&](int64_t at) { sum += std::fabs(v[at]); });
  return sum;
}

struct Reference {
  std::vector<float> values, scales;
};

Reference ReferenceBinarize(OwnedWeight& w) {
  const MatrixGeometry g = *GeometryOf(w.view());
  Reference out{w.values.values, {}};
  for (int64_t r = 0; r < g.rows; ++r) {
    const double sum = PlainAbsSum(g, out.values, r, r + 1);
    const float alpha = g.cols() > 0 ? static_cast<float>(sum / g.cols()) : 0.0f;
    ForEachInRow(g, r, [&](int64_t at) {
      float& v = out.values[at];
      v = std::signbit(v) && v != 0.0f ? -alpha : alpha;
    });
    out.scales.push_back(alpha);
  }
  return out;
}

void TernarizeRows(const MatrixGeometry& g, std::vector<float>& values, int64_t first,
                   int64_t end, Reference& out) {
  const double count = static_cast<double>(end - first) * g.cols();
  const double gamma = count > 0 ? PlainAbsSum(g, values, first, end) / count : 0.0;
  const float scale = static_cast<float>(gamma);
  for (int64_t r = first; r < end; ++r) {
    ForEachInRow(g, r, [&](int64_t at) {
      float& v = values[at];
      const double t = std::clamp(std::nearbyint(v / (gamma + kTernarizeEpsilon)), -1.0, 1.0);
      v = static_cast<float>(t) * scale;
    });
  }
  out.scales.push_back(scale);
}

Reference ReferenceTernarize(OwnedWeight& w, bool per_channel) {
  const MatrixGeometry g = *GeometryOf(w.view());
  Reference out{w.values.values, {}};
  if (!per_channel) {
    TernarizeRows(g, out.values, 0, g.rows, out);
  } else {
    for (int64_t r = 0; r < g.rows; ++r) TernarizeRows(g, out.values, r, r + 1, out);
  }
  return out;
}

void ExpectMatches(const std::string& what, OwnedWeight& w, const Reference& expected,
                   MethodConfig config) {
  auto method = CreateMethod(config);
  ASSERT_TRUE(method.ok()) << method.status();
  absl::StatusOr<MethodOutcome> outcome = (*method)->Apply(w.view(), nullptr);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(testing::SameBits(w.values.values, expected.values)) << what;
  EXPECT_TRUE(testing::SameBits(outcome->packing.scales, expected.scales)) << what;
}

TEST(BinarizeLayoutsTest, FastPathsGiveThePlainRulesBitsOnEveryLayout) {
  uint32_t seed = 100;
  for (const testing::LayoutCase& layout : EveryLayout()) {
    for (testing::Fill fill : EveryFill()) {
      OwnedWeight w("w", layout.shape, testing::Weights(fill, CountOf(layout.shape), ++seed),
                    layout.layout);
      const Reference expected = ReferenceBinarize(w);
      MethodConfig config;
      config.method = "binarize";
      ExpectMatches(layout.name + ", " + NameOf(fill), w, expected, config);
    }
  }
}

TEST(TernarizeLayoutsTest, FastPathsGiveThePlainRulesBitsOnEveryLayout) {
  uint32_t seed = 200;
  for (bool per_channel : {false, true}) {
    for (const testing::LayoutCase& layout : EveryLayout()) {
      for (testing::Fill fill : EveryFill()) {
        OwnedWeight w("w", layout.shape, testing::Weights(fill, CountOf(layout.shape), ++seed),
                      layout.layout);
        const Reference expected = ReferenceTernarize(w, per_channel);
        MethodConfig config;
        config.method = "ternarize";
        config.per_channel = per_channel;
        ExpectMatches(layout.name + ", " + NameOf(fill) + (per_channel ? ", per channel" : ""),
                      w, expected, config);
      }
    }
  }
}

TEST(TernarizeLayoutsTest, WeightsAroundHalfOfGammaRoundAsTheDivisionRounds) {
  // 201 probes sit on consecutive floats around (gamma + eps) / 2, where
  // the division rounds to 0 or 1. Gamma depends on the probes, so they
  // are placed again until it settles.
  std::vector<float> data(64, 1.5f);
  for (int i = 0; i < 201; ++i) data.push_back(0.0f);
  float center = 0.0f;
  for (int pass = 0; pass < 100; ++pass) {
    double sum = 0.0;
    for (float v : data) sum += std::fabs(v);
    center = static_cast<float>((sum / data.size() + kTernarizeEpsilon) / 2);
    float probe = center;
    for (int i = 0; i < 100; ++i) probe = std::nextafter(probe, 0.0f);
    for (int i = 0; i < 201; ++i, probe = std::nextafter(probe, 2.0f))
      data[64 + i] = i % 2 ? -probe : probe;
  }
  OwnedWeight w("w", {1, static_cast<int64_t>(data.size())}, data);
  const Reference expected = ReferenceTernarize(w, false);
  const auto zeros = std::count(expected.values.begin() + 64, expected.values.end(), 0.0f);
  ASSERT_GT(zeros, 0);
  ASSERT_LT(zeros, 201);  // the probes straddle the threshold
  MethodConfig config;
  config.method = "ternarize";
  ExpectMatches("probes", w, expected, config);
}

}  // namespace
}  // namespace bonsai::methods
