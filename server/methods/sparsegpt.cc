#include "server/methods/sparsegpt.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/methods/calibration_check.h"
#include "server/methods/obs_layer.h"
#include "server/methods/obs_sweep.h"
#include "server/methods/reconstruction.h"
#include "server/methods/rtn.h"
#include "server/methods/selection.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {
namespace {

// Column order for processing: natural, or for N:M on a Conv weight,
// (kernel position, channel) so that groups are contiguous. order[p] is the
// natural column of processing column p; empty means natural.
std::vector<int64_t> ProcessingOrder(const MatrixGeometry& g, bool nm) {
  if (!nm || g.kernel == 1) return {};
  std::vector<int64_t> order;
  order.reserve(g.cols());
  for (int64_t k = 0; k < g.kernel; ++k)
    for (int64_t ch = 0; ch < g.channels; ++ch) order.push_back(ch * g.kernel + k);
  return order;
}

}  // namespace

SparseGptMethod::SparseGptMethod(const MethodConfig& config)
    : n_(config.n), m_(config.m),
      block_size_(config.block_size > 0 ? config.block_size : kSparseGptDefaultBlock),
      dampening_(config.dampening > 0 ? config.dampening : kSparseGptDefaultDampening),
      quantize_(config.bits > 0), quant_(QuantSpecOf(config)) {
  if (m_ > 0) block_size_ = std::max(block_size_, m_);
}

absl::StatusOr<MethodOutcome> SparseGptMethod::Apply(const WeightTensor& weight,
                                                     const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  if (auto s = CheckCalibration("sparsegpt", weight, g); !s.ok()) return s;
  if (quantize_) {
    if (auto s = CheckQuantizable("sparsegpt", weight.info->name, weight.values->span());
        !s.ok()) {
      return s;
    }
  }
  ObsLayer layer;
  if (auto s = layer.Prepare(weight, g, {.order = ProcessingOrder(g, m_ > 0),
                                         .copy = quantize_,
                                         .dampening = dampening_,
                                         .block_size = block_size_});
      !s.ok()) {
    return s;
  }
  ObsSweep sweep(layer, {.n = n_, .m = m_, .sparsity = weight.sparsity, .channels = g.channels},
                 quantize_ ? &quant_ : nullptr, block_size_);
  if (auto s = sweep.Run(tick, "sparsegpt", weight.info->name); !s.ok()) return s;
  absl::StatusOr<double> numerator = sweep.Finish();
  if (!numerator.ok()) return numerator.status();

  MethodOutcome outcome = SparsityOutcome(g.channels, n_, m_);
  if (quantize_) {
    const std::string tail = GroupTailNote(g.cols(), quant_);
    if (!tail.empty()) {
      outcome.note = outcome.note.empty() ? tail : absl::StrCat(outcome.note, "; ", tail);
    }
    // The zeros are codes of the grid like any other weight: the quantized
    // layouts store them at their bit width, which beats a sparse encoding
    // of the float values.
    outcome.packing = QuantizedPacking(quant_, g.rows, g.cols(), sweep.grids());
  }
  outcome.reconstruction_error = RelativeReconstructionError(*numerator, layer.denominator());
  return outcome;
}

}  // namespace bonsai::methods
