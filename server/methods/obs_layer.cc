#include "server/methods/obs_layer.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/tensor/blas.h"

namespace bonsai::methods {
namespace {

using tensor::Matrix;
using tensor::Transpose;

// The buffer that serves, in turn, the denominator's row chunks, a sweep's
// block errors and scores, and its final row chunks: one buffer, so the
// peak is the largest of these and not their sum.
std::vector<float> WorkBuffer(int64_t rows, int64_t d, int block) {
  return std::vector<float>(std::max(std::min(rows, kRowChunk) * d, 2 * rows * block));
}

// H / samples in processing order. In natural order that is the
// calibration's own storage, scaled in place; a permuted order needs a copy
// in `owned`, and the original is freed.
absl::Span<float> ScaledHessian(CalibrationStats& stats, const std::vector<int64_t>& order,
                                std::vector<float>& owned) {
  const int64_t d = stats.dim;
  const float scale = 1.0f / static_cast<float>(std::max<uint64_t>(stats.samples, 1));
  if (order.empty()) {
    for (float& v : stats.gram) v *= scale;
    return absl::MakeSpan(stats.gram);
  }
  owned.resize(static_cast<size_t>(d) * d);
  for (int64_t a = 0; a < d; ++a) {
    const int64_t na = Natural(order, a);
    for (int64_t b = 0; b < d; ++b) owned[a * d + b] = stats.gram[na * d + Natural(order, b)] * scale;
  }
  std::vector<float>().swap(stats.gram);
  return absl::MakeSpan(owned);
}

}  // namespace

void SubtractScaled(float a, const float* u, float* w, int64_t n) {
  using Lanes = float __attribute__((vector_size(32)));
  const Lanes scale = {a, a, a, a, a, a, a, a};
  int64_t l = 0;
  for (; l + 8 <= n; l += 8) {
    Lanes wl, ul;
    std::memcpy(&wl, w + l, sizeof wl);
    std::memcpy(&ul, u + l, sizeof ul);
    wl -= scale * ul;
    std::memcpy(w + l, &wl, sizeof wl);
  }
  for (; l < n; ++l) w[l] -= a * u[l];
}

absl::Status ObsLayer::Prepare(const WeightTensor& weight, const MatrixGeometry& g,
                               Options options) {
  g_ = &g;
  values_ = weight.values->span();
  order_ = std::move(options.order);
  const int64_t d = g.cols();

  // Work in place when the columns are evenly spaced and in natural order;
  // otherwise in one scratch copy in processing order.
  const std::optional<int64_t> stride = UniformColumnStride(g);
  in_place_ = !options.copy && order_.empty() && stride && (*stride == 1 || g.row_stride == 1);
  if (in_place_) {
    w_ = {values_, g.rows, d, g.row_stride, *stride};
  } else {
    column_offset_.resize(d);
    for (int64_t p = 0; p < d; ++p) column_offset_[p] = g.Offset(0, Natural(order_, p));
    scratch_.resize(static_cast<size_t>(g.rows) * d);
    if (order_.empty()) {
      GatherRows(g, values_, 0, tensor::MatrixOf(absl::MakeSpan(scratch_), g.rows, d));
    } else {
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t p = 0; p < d; ++p)
          scratch_[r * d + p] = values_[r * g.row_stride + column_offset_[p]];
    }
    w_ = {absl::MakeSpan(scratch_), g.rows, d, d, 1};
  }

  const absl::Span<float> h = ScaledHessian(*weight.calibration, order_, owned_hessian_);
  double diag_sum = 0.0;
  dead_.assign(d, 0);
  for (int64_t j = 0; j < d; ++j) {
    if (h[j * d + j] == 0.0f) {
      h[j * d + j] = 1.0f;
      dead_[j] = 1;
      for (int64_t r = 0; r < g.rows; ++r) w_.at(r, j) = 0.0f;
    }
    diag_sum += h[j * d + j];
  }

  // Dead inputs are zero columns of W, so their entries of H_d do not count
  // in the denominator.
  lambda_ = d > 0 ? static_cast<float>(options.dampening * diag_sum / d) : 0.0f;
  for (int64_t j = 0; j < d; ++j) h[j * d + j] += lambda_;
  const Matrix factor = tensor::MatrixOf(h, d, d);
  auto in_tensor = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("tensor '", weight.info->name, "': ", s.message()));
  };
  if (auto s = tensor::ReversedCholeskyUpper(factor); !s.ok()) return in_tensor(s);
  work_ = WorkBuffer(g.rows, d, options.block_size);
  double w_norm2 = 0.0;
  absl::StatusOr<double> wr_norm2 = SumOverRowChunks(
      g.rows, d, absl::MakeSpan(work_), factor, Transpose::kNo,
      [&](int64_t r, absl::Span<float> row) {
        for (int64_t c = 0; c < d; ++c) row[c] = w_.at(r, c);
        w_norm2 += SumOfSquares(row);
      });
  if (!wr_norm2.ok()) return wr_norm2.status();
  denominator_ = *wr_norm2 - lambda_ * w_norm2;
  if (auto s = tensor::InvertUpper(factor); !s.ok()) return in_tensor(s);
  u_ = h;
  return absl::OkStatus();
}

double ObsLayer::WriteBack() {
  if (in_place_) return 0.0;
  const int64_t d = w_.cols;
  double change = 0.0;
  for (int64_t r = 0; r < w_.rows; ++r) {
    float* out = values_.data() + r * g_->row_stride;
    const float* in = scratch_.data() + r * d;
    for (int64_t p = 0; p < d; ++p) {
      float& slot = out[column_offset_[p]];
      if (!dead_[p]) {
        const double diff = static_cast<double>(slot) - in[p];
        change += diff * diff;
      }
      slot = in[p];
    }
  }
  return change;
}

}  // namespace bonsai::methods
