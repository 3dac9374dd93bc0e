#include "server/methods/binarize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "server/methods/abs_sum.h"
#include "server/methods/simd.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {
namespace {

using simd::Bits;

float AlphaOf(double abs_sum, int64_t cols) {
  return cols > 0 ? static_cast<float>(abs_sum / cols) : 0.0f;
}

// The rule of the generic path below in bit operations: alpha with its sign
// flipped when v has its sign bit set and is not a zero. Equal for every v,
// NaN included.
Bits SignTimes(Bits v, Bits alpha) {
  const Bits nonzero = simd::AsBits((v & ~simd::kSignBit) != 0);
  return alpha ^ (v & simd::kSignBit & nonzero);
}

}  // namespace

absl::StatusOr<MethodOutcome> BinarizeMethod::Apply(const WeightTensor& weight,
                                                    const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  absl::Span<float> values = weight.values->span();
  MethodOutcome outcome;
  outcome.packing.packing = formats::Packing::kBinary;
  std::vector<float>& alphas = outcome.packing.scales;
  alphas.resize(g.rows);

  if (RowsAreContiguous(g)) {
    // Each row is read from memory once: summed, then binarized from cache.
    for (int64_t r = 0; r < g.rows; ++r) {
      float* row = values.data() + r * g.row_stride;
      alphas[r] = AlphaOf(RowAbsSum({row, static_cast<size_t>(g.cols())}), g.cols());
      const Bits alpha = simd::SplatBits(alphas[r]);
      simd::TransformBits(row, g.cols(), [&](Bits v, int64_t) { return SignTimes(v, alpha); });
    }
    return outcome;
  }

  const std::vector<double> sums = RowAbsSums(g, values);
  for (int64_t r = 0; r < g.rows; ++r) alphas[r] = AlphaOf(sums[r], g.cols());
  if (ColumnsAreContiguous(g)) {
    // Storage order, a column at a time; lane i of a column is row i.
    std::vector<float> padded(g.rows + simd::kLanes - 1);
    std::copy(alphas.begin(), alphas.end(), padded.begin());
    for (int64_t c = 0; c < g.cols(); ++c) {
      simd::TransformBits(values.data() + c * g.rows, g.rows, [&](Bits v, int64_t i) {
        return SignTimes(v, simd::LoadBits(padded.data() + i));
      });
    }
    return outcome;
  }
  for (int64_t r = 0; r < g.rows; ++r) {
    const float alpha = alphas[r];
    ForEachInRow(g, r, [&](int64_t at) {
      float& v = values[at];
      v = std::signbit(v) && v != 0.0f ? -alpha : alpha;  // -0.0 counts as 0: +alpha
    });
  }
  return outcome;
}

}  // namespace bonsai::methods
