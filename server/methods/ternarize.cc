#include "server/methods/ternarize.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "server/methods/abs_sum.h"
#include "server/methods/simd.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {
namespace {

using simd::Bits;

// The rule, as the paper states it. The division uses gamma + eps in double
// and the result is gamma * t in float, so kept weights take exactly the
// reported scale.
struct Rule {
  double divisor;
  float scale;

  explicit Rule(double gamma)
      : divisor(gamma + kTernarizeEpsilon), scale(static_cast<float>(gamma)) {}
  float operator()(float v) const {
    const double t = std::clamp(std::nearbyint(v / divisor), -1.0, 1.0);
    return static_cast<float>(t) * scale;
  }
};

// The same rule as a threshold, when gamma (and so every weight) is finite:
// v / divisor rounds monotonically in v and symmetrically about 0, so the
// rule gives sign(v) * scale from some |v| on and a zero of v's sign below
// it. The threshold is found with the rule itself, by bisection over the
// bit patterns of non-negative floats (ordered like their values).
struct Threshold {
  Bits from, scale;

  explicit Threshold(const Rule& rule) : scale(simd::SplatBits(rule.scale)) {
    uint32_t below = 0, at = std::bit_cast<uint32_t>(INFINITY);  // inf / divisor rounds away
    while (below < at) {
      const uint32_t mid = below + (at - below) / 2;
      if (std::nearbyint(std::bit_cast<float>(mid) / rule.divisor) >= 1.0) {
        at = mid;
      } else {
        below = mid + 1;
      }
    }
    from = simd::SplatBits(std::bit_cast<float>(at));
  }
};

Bits Ternarize(Bits v, Bits from, Bits scale) {
  const Bits away = simd::AsBits(simd::AsFloats(v & ~simd::kSignBit) >= simd::AsFloats(from));
  return (v & simd::kSignBit) | (scale & away);
}

void TernarizeSpan(absl::Span<float> values, const Rule& rule) {
  if (!std::isfinite(rule.divisor)) {
    for (float& v : values) v = rule(v);
    return;
  }
  const Threshold t(rule);
  simd::TransformBits(values.data(), values.size(),
                      [&](Bits v, int64_t) { return Ternarize(v, t.from, t.scale); });
}

double Mean(double sum, double count) { return count > 0 ? sum / count : 0.0; }

// Per output channel on a weight whose rows are not contiguous.
void TernarizeRowsApart(const MatrixGeometry& g, absl::Span<float> values,
                        const std::vector<double>& gammas) {
  const bool finite = std::all_of(gammas.begin(), gammas.end(),
                                  [](double gamma) { return std::isfinite(gamma); });
  if (ColumnsAreContiguous(g) && finite) {
    // Storage order, a column at a time; lane i of a column is row i.
    std::vector<float> from(g.rows + simd::kLanes - 1), scale(g.rows + simd::kLanes - 1);
    for (int64_t r = 0; r < g.rows; ++r) {
      const Threshold t{Rule(gammas[r])};
      from[r] = simd::AsFloats(t.from)[0];
      scale[r] = simd::AsFloats(t.scale)[0];
    }
    for (int64_t c = 0; c < g.cols(); ++c) {
      simd::TransformBits(values.data() + c * g.rows, g.rows, [&](Bits v, int64_t i) {
        return Ternarize(v, simd::LoadBits(from.data() + i), simd::LoadBits(scale.data() + i));
      });
    }
    return;
  }
  for (int64_t r = 0; r < g.rows; ++r) {
    const Rule rule(gammas[r]);
    ForEachInRow(g, r, [&](int64_t at) { values[at] = rule(values[at]); });
  }
}

}  // namespace

absl::StatusOr<MethodOutcome> TernarizeMethod::Apply(const WeightTensor& weight,
                                                     const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  absl::Span<float> values = weight.values->span();
  MethodOutcome outcome;
  outcome.packing.packing = formats::Packing::kTernary;
  std::vector<float>& scales = outcome.packing.scales;
  if (!per_channel_) {
    // One rule for every weight, from the mean of all its |w|.
    const double count = static_cast<double>(g.rows) * g.cols();
    const Rule rule(Mean(AbsSumOfAllRows(g, values), count));
    TernarizeSpan(values, rule);
    scales.push_back(rule.scale);
    return outcome;
  }
  const double cols = static_cast<double>(g.cols());
  if (RowsAreContiguous(g)) {
    // Each row is read from memory once: summed, then ternarized from cache.
    for (int64_t r = 0; r < g.rows; ++r) {
      const absl::Span<float> row = values.subspan(r * g.row_stride, g.cols());
      const Rule rule(Mean(RowAbsSum(row), cols));
      TernarizeSpan(row, rule);
      scales.push_back(rule.scale);
    }
    return outcome;
  }
  std::vector<double> gammas = RowAbsSums(g, values);
  for (double& gamma : gammas) {
    gamma = Mean(gamma, cols);
    scales.push_back(static_cast<float>(gamma));
  }
  TernarizeRowsApart(g, values, gammas);
  return outcome;
}

}  // namespace bonsai::methods
