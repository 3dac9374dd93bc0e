#include "server/methods/structured.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/methods/selection.h"
#include "server/methods/weight_matrix.h"
#include "server/tensor/magnitude_select.h"

namespace bonsai::methods {
namespace {

std::vector<float> ChannelNorms(const MatrixGeometry& g, absl::Span<const float> values,
                                NormKind norm) {
  std::vector<float> norms(g.rows);
  for (int64_t r = 0; r < g.rows; ++r) {
    double sum = 0.0;
    for (int64_t c = 0; c < g.cols(); ++c) {
      const double v = values[g.Offset(r, c)];
      sum += norm == NormKind::kL1 ? std::fabs(v) : v * v;
    }
    norms[r] = static_cast<float>(norm == NormKind::kL1 ? sum : std::sqrt(sum));
  }
  return norms;
}

}  // namespace

std::vector<int64_t> ChannelsToRemove(const WeightTensor& weight, NormKind norm,
                                      double fraction) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok() || geometry->rows == 0) return {};
  const std::vector<float> norms = ChannelNorms(*geometry, weight.values->span(), norm);
  uint64_t count = tensor::PruneCount(fraction, norms.size());
  if (count >= norms.size()) count = norms.size() - 1;
  std::vector<int64_t> order;
  std::unique_ptr<bool[]> prune(new bool[norms.size()]);
  PruneSmallestK(norms, count, order, absl::MakeSpan(prune.get(), norms.size()));
  std::vector<int64_t> channels;
  for (size_t r = 0; r < norms.size(); ++r)
    if (prune[r]) channels.push_back(static_cast<int64_t>(r));
  return channels;
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
