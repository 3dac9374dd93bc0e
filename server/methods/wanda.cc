#include "server/methods/wanda.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/methods/calibration_check.h"
#include "server/methods/reconstruction.h"
#include "server/methods/selection.h"
#include "server/methods/weight_matrix.h"
#include "server/tensor/magnitude_select.h"

namespace bonsai::methods {
namespace {

// Marks in `prune` (one row, in column order) the weights N:M removes.
void PruneRowNM(const MatrixGeometry& g, absl::Span<const float> scores, int n, int m,
                absl::Span<bool> prune) {
  std::fill(prune.begin(), prune.end(), false);
  std::vector<float> group(m);
  std::unique_ptr<bool[]> keep(new bool[m]);
  const int64_t grouped = GroupedChannels(g.channels, m);
  for (int64_t k = 0; k < g.kernel; ++k) {
    for (int64_t first = 0; first < grouped; first += m) {
      for (int t = 0; t < m; ++t) group[t] = scores[(first + t) * g.kernel + k];
      KeepLargestN(group, n, absl::MakeSpan(keep.get(), m));
      for (int t = 0; t < m; ++t) prune[(first + t) * g.kernel + k] = !keep[t];
    }
  }
}

}  // namespace

absl::StatusOr<MethodOutcome> WandaMethod::Apply(const WeightTensor& weight,
                                                 const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  if (auto s = CheckCalibration("wanda", weight, g); !s.ok()) return s;
  const int64_t d = g.cols();
  const tensor::ConstMatrix gram = tensor::MatrixOf(
      absl::MakeConstSpan(weight.calibration->gram), d, d);

  std::vector<float> feature_norm(d);
  for (int64_t c = 0; c < d; ++c)
    feature_norm[c] = std::sqrt(std::max(weight.calibration->gram[c * d + c], 0.0f));

  absl::Span<float> values = weight.values->span();
  const uint64_t prune_per_row = tensor::PruneCount(weight.sparsity, d);
  std::vector<float> before(kRowChunk * d), removed(kRowChunk * d), scratch, scores(d);
  std::vector<int64_t> order;
  std::unique_ptr<bool[]> prune(new bool[d]);
  double num = 0.0, den = 0.0;
  for (int64_t first = 0; first < g.rows; first += kRowChunk) {
    const int64_t rows = std::min(kRowChunk, g.rows - first);
    tensor::Matrix w = tensor::MatrixOf(absl::MakeSpan(before), rows, d);
    tensor::Matrix dw = tensor::MatrixOf(absl::MakeSpan(removed), rows, d);
    GatherRows(g, values, first, w);
    std::fill(removed.begin(), removed.end(), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = before.data() + r * d;
      for (int64_t c = 0; c < d; ++c) scores[c] = std::fabs(row[c]) * feature_norm[c];
      if (m_ > 0) {
        PruneRowNM(g, scores, n_, m_, absl::MakeSpan(prune.get(), d));
      } else {
        PruneSmallestK(scores, prune_per_row, order, absl::MakeSpan(prune.get(), d));
      }
      for (int64_t c = 0; c < d; ++c) {
        if (!prune[c]) continue;
        removed[r * d + c] = row[c];
        values[g.Offset(first + r, c)] = 0.0f;
      }
    }
    absl::StatusOr<double> chunk_den = SumOfQuadraticForms(w, gram, scratch);
    if (!chunk_den.ok()) return chunk_den.status();
    absl::StatusOr<double> chunk_num = SumOfQuadraticForms(dw, gram, scratch);
    if (!chunk_num.ok()) return chunk_num.status();
    den += *chunk_den;
    num += *chunk_num;
    if (tick && !tick(static_cast<double>(first + rows) / g.rows)) {
      return absl::CancelledError(absl::StrCat("wanda stopped at tensor '", weight.info->name, "'"));
    }
  }
  MethodOutcome outcome = SparsityOutcome(g.channels, n_, m_);
  outcome.reconstruction_error = RelativeReconstructionError(num, den);
  return outcome;
}

}  // namespace bonsai::methods
