#include "server/methods/nm.h"

#include <cmath>

#include "server/methods/selection.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {

absl::StatusOr<MethodOutcome> NMMethod::Apply(const WeightTensor& weight,
                                              const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  absl::Span<float> values = weight.values->span();

  std::vector<int64_t> offsets(m_);
  std::vector<float> scores(m_);
  std::unique_ptr<bool[]> keep(new bool[m_]);
  const int64_t grouped = GroupedChannels(g.channels, m_);
  for (int64_t r = 0; r < g.rows; ++r) {
    for (int64_t k = 0; k < g.kernel; ++k) {
      for (int64_t first = 0; first < grouped; first += m_) {
        for (int t = 0; t < m_; ++t) {
          offsets[t] = g.Offset(r, first + t, k);
          scores[t] = std::fabs(values[offsets[t]]);
        }
        KeepLargestN(scores, n_, absl::MakeSpan(keep.get(), m_));
        for (int t = 0; t < m_; ++t)
          if (!keep[t]) values[offsets[t]] = 0.0f;
      }
    }
  }
  return SparsityOutcome(g.channels, n_, m_);
}

}  // namespace bonsai::methods
