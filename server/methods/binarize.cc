#include "server/methods/binarize.h"

#include <cmath>

#include "server/methods/weight_matrix.h"

namespace bonsai::methods {

absl::StatusOr<MethodOutcome> BinarizeMethod::Apply(const WeightTensor& weight,
                                                    const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  absl::Span<float> values = weight.values->span();
  MethodOutcome outcome;
  outcome.packing.packing = formats::Packing::kBinary;
  outcome.packing.scales.resize(g.rows);
  for (int64_t r = 0; r < g.rows; ++r) {
    double sum = 0.0;
    ForEachInRow(g, r, [&](int64_t at) { sum += std::fabs(values[at]); });
    const float alpha = g.cols() > 0 ? static_cast<float>(sum / g.cols()) : 0.0f;
    ForEachInRow(g, r, [&](int64_t at) {
      float& v = values[at];
      v = std::signbit(v) && v != 0.0f ? -alpha : alpha;  // -0.0 counts as 0: +alpha
    });
    outcome.packing.scales[r] = alpha;
  }
  return outcome;
}

}  // namespace bonsai::methods
