#include "server/methods/ternarize.h"

#include <algorithm>
#include <cmath>

#include "server/methods/weight_matrix.h"

namespace bonsai::methods {
namespace {

double MeanAbs(const MatrixGeometry& g, absl::Span<const float> values, int64_t first_row,
               int64_t end_row) {
  double sum = 0.0;
  for (int64_t r = first_row; r < end_row; ++r)
    ForEachInRow(g, r, [&](int64_t at) { sum += std::fabs(values[at]); });
  const double count = static_cast<double>(end_row - first_row) * g.cols();
  return count > 0 ? sum / count : 0.0;
}

void Ternarize(const MatrixGeometry& g, absl::Span<float> values, int64_t first_row,
               int64_t end_row, double gamma) {
  // The division uses gamma + eps in double and the result is gamma * t in
  // float, so kept weights take exactly the reported scale.
  const float scale = static_cast<float>(gamma);
  const double divisor = gamma + kTernarizeEpsilon;
  for (int64_t r = first_row; r < end_row; ++r) {
    ForEachInRow(g, r, [&](int64_t at) {
      float& v = values[at];
      const double t = std::clamp(std::nearbyint(v / divisor), -1.0, 1.0);
      v = static_cast<float>(t) * scale;
    });
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
  if (per_channel_) {
    for (int64_t r = 0; r < g.rows; ++r) {
      const double gamma = MeanAbs(g, values, r, r + 1);
      Ternarize(g, values, r, r + 1, gamma);
      outcome.packing.scales.push_back(static_cast<float>(gamma));
    }
  } else {
    const double gamma = MeanAbs(g, values, 0, g.rows);
    Ternarize(g, values, 0, g.rows, gamma);
    outcome.packing.scales.push_back(static_cast<float>(gamma));
  }
  return outcome;
}

}  // namespace bonsai::methods
