#include "server/methods/structured.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "server/methods/weight_matrix.h"
#include "server/tensor/magnitude_select.h"

namespace bonsai::methods {
namespace {

std::vector<double> NormsOf(const MatrixGeometry& g, absl::Span<const float> values,
                            NormKind norm) {
  std::vector<double> norms(g.rows);
  for (int64_t r = 0; r < g.rows; ++r) {
    double sum = 0.0;
    for (int64_t c = 0; c < g.cols(); ++c) {
      const double v = values[g.Offset(r, c)];
      sum += norm == NormKind::kL1 ? std::fabs(v) : v * v;
    }
    norms[r] = norm == NormKind::kL1 ? sum : std::sqrt(sum);
  }
  return norms;
}

}  // namespace

std::vector<double> ChannelNorms(const WeightTensor& weight, NormKind norm) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return {};
  return NormsOf(*geometry, weight.values->span(), norm);
}

std::vector<int64_t> LowestChannels(absl::Span<const double> scores, uint64_t count) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  // Stable: among equal scores the lower index comes first.
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[a] < scores[b]; });
  order.resize(std::min<uint64_t>(count, order.size()));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<int64_t> ChannelsToRemove(const WeightTensor& weight, NormKind norm,
                                      double fraction) {
  const std::vector<double> norms = ChannelNorms(weight, norm);
  if (norms.empty()) return {};
  uint64_t count = tensor::PruneCount(fraction, norms.size());
  if (count >= norms.size()) count = norms.size() - 1;
  return LowestChannels(norms, count);
}

absl::StatusOr<MethodOutcome> StructuredMethod::Apply(const WeightTensor& weight,
                                                      const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const std::vector<int64_t> channels = ChannelsToRemove(weight, norm_, weight.sparsity);
  absl::Span<float> values = weight.values->span();
  for (int64_t r : channels)
    for (int64_t c = 0; c < geometry->cols(); ++c) values[geometry->Offset(r, c)] = 0.0f;
  MethodOutcome outcome;
  outcome.packing.packing = formats::Packing::kSparseBitmask;
  outcome.note = absl::StrCat(channels.size(), " of ", geometry->rows,
                              " output channels zeroed");
  if (tensor::PruneCount(weight.sparsity, geometry->rows) > channels.size()) {
    absl::StrAppend(&outcome.note, " (one channel always kept)");
  }
  return outcome;
}

}  // namespace bonsai::methods
