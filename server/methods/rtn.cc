#include "server/methods/rtn.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/methods/calibration_check.h"
#include "server/methods/reconstruction.h"
#include "server/methods/weight_matrix.h"
#include "server/tensor/run_in_parallel.h"

namespace bonsai::methods {

QuantSpec QuantSpecOf(const MethodConfig& config) {
  QuantSpec spec;
  spec.bits = config.bits > 0 ? config.bits : kQuantDefaultBits;
  spec.symmetric = config.symmetric;
  spec.group_size = config.group_size;
  return spec;
}

RtnMethod::RtnMethod(const MethodConfig& config) : spec_(QuantSpecOf(config)) {}

absl::StatusOr<MethodOutcome> RtnMethod::Apply(const WeightTensor& weight,
                                               const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  absl::Span<float> values = weight.values->span();
  if (auto s = CheckQuantizable("rtn", weight.info->name, values); !s.ok()) return s;
  const bool measure = weight.calibration != nullptr;
  if (measure) {
    if (auto s = CheckCalibration("rtn", weight, g); !s.ok()) return s;
  }
  const int64_t d = g.cols();
  const int64_t groups = GroupCount(d, spec_);
  std::vector<Grid> grids(static_cast<size_t>(g.rows * groups));
  MethodOutcome outcome;
  outcome.note = GroupTailNote(d, spec_);
  auto stopped = [&] {
    return absl::CancelledError(absl::StrCat("rtn stopped at tensor '", weight.info->name, "'"));
  };

  if (RowsAreContiguous(g) && !measure) {
    // Each group is read once from memory and quantized from L1. Rows are
    // independent, so two halves of a long step may run on two cores
    // (run_in_parallel.h) with the same result.
    auto quantize_rows = [&](int64_t first, int64_t end) {
      for (int64_t r = first; r < end; ++r) {
        QuantizeRow(values.subspan(r * g.row_stride, d), spec_, grids.data() + r * groups);
      }
    };
    const int64_t half = std::max<int64_t>(
        kRowChunk, static_cast<int64_t>(tensor::kWorthASecondCore) / std::max<int64_t>(d, 1));
    for (int64_t first = 0; first < g.rows; first += 2 * half) {
      const int64_t middle = std::min(first + half, g.rows);
      const int64_t end = std::min(first + 2 * half, g.rows);
      tensor::RunInParallel(
          static_cast<size_t>((end - first) * d) >= tensor::kWorthASecondCore,
          [&] { quantize_rows(first, middle); }, [&] { quantize_rows(middle, end); });
      if (tick && !tick(static_cast<double>(end) / g.rows)) return stopped();
    }
    outcome.packing = QuantizedPacking(spec_, g.rows, d, grids);
    return outcome;
  }

  // Rows in chunks: gathered (any layout), quantized, written back; with
  // calibration the chunk's change is measured against the Gram matrix.
  const int64_t chunk = std::min(kRowChunk, std::max<int64_t>(g.rows, 1));
  std::vector<float> rows(chunk * d), before(measure ? chunk * d : 0), scratch;
  const tensor::ConstMatrix gram =
      measure ? tensor::MatrixOf(absl::MakeConstSpan(weight.calibration->gram), d, d)
              : tensor::ConstMatrix{};
  double num = 0.0, den = 0.0;
  for (int64_t first = 0; first < g.rows; first += chunk) {
    const int64_t count = std::min(chunk, g.rows - first);
    const tensor::Matrix w = tensor::MatrixOf(absl::MakeSpan(rows).subspan(0, count * d), count, d);
    GatherRows(g, values, first, w);
    if (measure) std::copy(rows.begin(), rows.begin() + count * d, before.begin());
    for (int64_t r = 0; r < count; ++r) {
      QuantizeRow(w.data.subspan(r * d, d), spec_, grids.data() + (first + r) * groups);
    }
    ScatterRows(g, w, first, values);
    if (measure) {
      const tensor::Matrix original =
          tensor::MatrixOf(absl::MakeSpan(before).subspan(0, count * d), count, d);
      absl::StatusOr<double> chunk_den = SumOfQuadraticForms(original, gram, scratch);
      if (!chunk_den.ok()) return chunk_den.status();
      for (int64_t i = 0; i < count * d; ++i) before[i] -= rows[i];  // now W - W'
      absl::StatusOr<double> chunk_num = SumOfQuadraticForms(original, gram, scratch);
      if (!chunk_num.ok()) return chunk_num.status();
      den += *chunk_den;
      num += *chunk_num;
    }
    if (tick && !tick(static_cast<double>(first + count) / g.rows)) return stopped();
  }
  if (measure) outcome.reconstruction_error = RelativeReconstructionError(num, den);
  outcome.packing = QuantizedPacking(spec_, g.rows, d, grids);
  return outcome;
}

}  // namespace bonsai::methods
