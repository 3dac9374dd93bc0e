#include "server/methods/gptq.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "server/methods/calibration_check.h"
#include "server/methods/obs_layer.h"
#include "server/methods/obs_sweep.h"
#include "server/methods/reconstruction.h"
#include "server/methods/rtn.h"
#include "server/methods/sparsegpt.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {
namespace {

// Columns by decreasing H_jj, ties to the lower column; empty when that is
// the natural order (no permuted copy of H is needed then).
std::vector<int64_t> ActOrder(const CalibrationStats& stats) {
  const int64_t d = stats.dim;
  std::vector<int64_t> order(d);
  std::iota(order.begin(), order.end(), 0);
  auto diag = [&](int64_t j) { return stats.gram[j * d + j]; };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return diag(a) > diag(b); });
  for (int64_t p = 0; p < d; ++p)
    if (order[p] != p) return order;
  return {};
}

}  // namespace

GptqMethod::GptqMethod(const MethodConfig& config)
    : spec_(QuantSpecOf(config)),
      block_size_(config.block_size > 0 ? config.block_size : kSparseGptDefaultBlock),
      dampening_(config.dampening > 0 ? config.dampening : kSparseGptDefaultDampening),
      act_order_(config.act_order) {}

absl::StatusOr<MethodOutcome> GptqMethod::Apply(const WeightTensor& weight,
                                                const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  if (auto s = CheckCalibration("gptq", weight, g); !s.ok()) return s;
  if (auto s = CheckQuantizable("gptq", weight.info->name, weight.values->span()); !s.ok()) {
    return s;
  }
  ObsLayer layer;
  if (auto s = layer.Prepare(weight, g, {.order = act_order_ ? ActOrder(*weight.calibration)
                                                             : std::vector<int64_t>{},
                                         .copy = true,
                                         .dampening = dampening_,
                                         .block_size = block_size_});
      !s.ok()) {
    return s;
  }
  ObsSweep sweep(layer, PruneSpec{}, &spec_, block_size_);
  if (auto s = sweep.Run(tick, "gptq", weight.info->name); !s.ok()) return s;
  absl::StatusOr<double> numerator = sweep.Finish();
  if (!numerator.ok()) return numerator.status();

  MethodOutcome outcome;
  outcome.note = GroupTailNote(g.cols(), spec_);
  outcome.reconstruction_error = RelativeReconstructionError(*numerator, layer.denominator());
  outcome.packing = QuantizedPacking(spec_, g.rows, g.cols(), sweep.grids());
  return outcome;
}

}  // namespace bonsai::methods
