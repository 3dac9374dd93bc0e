#include "server/methods/sparsegpt.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "server/methods/calibration_check.h"
#include "server/methods/reconstruction.h"
#include "server/methods/selection.h"
#include "server/methods/weight_matrix.h"
#include "server/tensor/blas.h"
#include "server/tensor/magnitude_select.h"

// Why the reconstruction error needs no copy of the original weight: every
// update the algorithm makes is W -= E U, one row of U per visited column,
// with E the matrix of scaled errors (w - q) / U_jj. So W' = W - E U exactly,
// and because U H_d U^T = I for the dampened H_d = H/n + lambda I,
//   tr(dW (H/n) dW^T) = ||E||^2 - lambda ||E U||^2.
// E is non-zero only where a weight was pruned, where W' is zero, so E is
// kept in the pruned slots of the weight itself until the end, with one bit
// per weight saying which slots those are.

namespace bonsai::methods {
namespace {

using tensor::ConstMatrix;
using tensor::Matrix;
using tensor::Transpose;

// The weight as a strided matrix in processing order: (r, c) at
// data[r * row_stride + c * col_stride], one of the strides being 1.
struct Work {
  absl::Span<float> data;
  int64_t rows = 0, cols = 0, row_stride = 0, col_stride = 0;
  float& at(int64_t r, int64_t c) const { return data[r * row_stride + c * col_stride]; }
};

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

int64_t Natural(const std::vector<int64_t>& order, int64_t p) {
  return order.empty() ? p : order[p];
}

// In processing order, column p's channel is p % channels for N:M (the
// kernel is 1 or the order is kernel-major).
class Groups {
 public:
  Groups(int64_t channels, int m)
      : channels_(channels), m_(m), grouped_(m > 0 ? GroupedChannels(channels, m) : 0) {}
  bool starts_group(int64_t p) const {
    const int64_t ch = p % channels_;
    return ch < grouped_ && ch % m_ == 0;
  }
  // Moves a block end back so no group straddles two blocks.
  int64_t AlignEnd(int64_t end) const {
    if (m_ == 0) return end;
    const int64_t ch = end % channels_;
    return ch < grouped_ ? end - ch % m_ : end;
  }

 private:
  int64_t channels_;
  int m_;
  int64_t grouped_;
};

class Pruner {
 public:
  Pruner(Work w, std::vector<float>& u, int n, int m, int block, double sparsity,
         int64_t channels)
      : w_(w), d_(w.cols), u_(u), n_(n), m_(m), block_(block), sparsity_(sparsity),
        groups_(channels, m), pruned_(static_cast<size_t>(w.rows) * w.cols, false),
        w1_(static_cast<size_t>(w.rows) * block), err1_(w1_.size()),
        prune1_(new bool[w1_.size()]) {}

  // Runs the blocks; `tick` gets the fraction done after each.
  absl::Status Run(const ProgressTick& tick, absl::string_view name) {
    for (int64_t i1 = 0; i1 < d_;) {
      const int64_t i2 = i1 + block_ >= d_ ? d_ : groups_.AlignEnd(i1 + block_);
      PruneBlock(i1, i2);
      if (auto s = LazyUpdate(i1, i2); !s.ok()) return s;
      if (tick && !tick(static_cast<double>(i2) / d_)) {
        return absl::CancelledError(absl::StrCat("sparsegpt stopped at tensor '", name, "'"));
      }
      i1 = i2;
    }
    return absl::OkStatus();
  }

  // ||E||^2 and ||E U||^2, then zeroes the pruned slots (which held E).
  absl::Status FinishAndMeasure(double* e_norm2, double* dw_norm2) {
    std::vector<float> rows_buf(static_cast<size_t>(kRowChunk) * d_);
    const ConstMatrix u = tensor::MatrixOf(absl::MakeConstSpan(u_), d_, d_);
    *e_norm2 = *dw_norm2 = 0.0;
    for (int64_t first = 0; first < w_.rows; first += kRowChunk) {
      const int64_t rows = std::min(kRowChunk, w_.rows - first);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < d_; ++c) {
          float& slot = w_.at(first + r, c);
          const bool pruned = pruned_[(first + r) * d_ + c];
          rows_buf[r * d_ + c] = pruned ? slot : 0.0f;
          *e_norm2 += pruned ? static_cast<double>(slot) * slot : 0.0;
          if (pruned) slot = 0.0f;
        }
      }
      Matrix e = tensor::MatrixOf(absl::MakeSpan(rows_buf).subspan(0, rows * d_), rows, d_);
      if (auto s = tensor::MultiplyByUpperRight(u, e); !s.ok()) return s;
      for (int64_t i = 0; i < rows * d_; ++i) *dw_norm2 += static_cast<double>(rows_buf[i]) * rows_buf[i];
    }
    return absl::OkStatus();
  }

 private:
  float U(int64_t i, int64_t j) const { return u_[i * d_ + j]; }

  // Chooses the unstructured mask of block [i1, i2): its share of the
  // tensor's round(sparsity * size), by w^2 / U_jj^2.
  void ChooseBlockMask(int64_t i1, int64_t count) {
    const int64_t rows = w_.rows;
    std::vector<float> scores(rows * count);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < count; ++j) {
        const float diag = U(i1 + j, i1 + j);
        const float w = w1_[r * block_ + j];
        scores[r * count + j] = w * w / (diag * diag);
      }
    const uint64_t k = tensor::PruneCount(sparsity_, rows * (i1 + count)) -
                       tensor::PruneCount(sparsity_, rows * i1);
    std::vector<int64_t> order;
    std::unique_ptr<bool[]> flat(new bool[scores.size()]);
    PruneSmallestK(scores, k, order, absl::MakeSpan(flat.get(), scores.size()));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < count; ++j) prune1_[r * block_ + j] = flat[r * count + j];
  }

  // N:M mask of the group starting at block column j, from the current
  // (already updated) weights, as the reference does.
  void ChooseGroupMask(int64_t i1, int64_t j) {
    std::vector<float> scores(m_);
    std::unique_ptr<bool[]> keep(new bool[m_]);
    for (int64_t r = 0; r < w_.rows; ++r) {
      for (int t = 0; t < m_; ++t) {
        const float diag = U(i1 + j + t, i1 + j + t);
        const float w = w1_[r * block_ + j + t];
        scores[t] = w * w / (diag * diag);
      }
      KeepLargestN(scores, n_, absl::MakeSpan(keep.get(), m_));
      for (int t = 0; t < m_; ++t) prune1_[r * block_ + j + t] = !keep[t];
    }
  }

  void PruneBlock(int64_t i1, int64_t i2) {
    const int64_t count = i2 - i1, rows = w_.rows;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < count; ++j) {
        w1_[r * block_ + j] = w_.at(r, i1 + j);
        prune1_[r * block_ + j] = false;
      }
    if (m_ == 0) ChooseBlockMask(i1, count);
    for (int64_t j = 0; j < count; ++j) {
      if (m_ > 0 && groups_.starts_group(i1 + j)) ChooseGroupMask(i1, j);
      const float diag = U(i1 + j, i1 + j);
      const float* u_row = u_.data() + (i1 + j) * d_ + i1;
      for (int64_t r = 0; r < rows; ++r) {
        float* w_row = w1_.data() + r * block_;
        const float w = w_row[j];
        const float q = prune1_[r * block_ + j] ? 0.0f : w;
        const float err = (w - q) / diag;
        err1_[r * block_ + j] = err;
        w_row[j] = q;
        if (err == 0.0f) continue;
        for (int64_t l = j + 1; l < count; ++l) w_row[l] -= err * u_row[l];
      }
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < count; ++j) {
        const bool pruned = prune1_[r * block_ + j];
        pruned_[r * d_ + i1 + j] = pruned;
        w_.at(r, i1 + j) = pruned ? err1_[r * block_ + j] : w1_[r * block_ + j];
      }
  }

  // W[:, i2:] -= Err1 * U[i1:i2, i2:], in the weight's own storage.
  absl::Status LazyUpdate(int64_t i1, int64_t i2) {
    if (i2 >= d_) return absl::OkStatus();
    const int64_t count = i2 - i1, rest = d_ - i2;
    const ConstMatrix err{absl::MakeConstSpan(err1_), w_.rows, count, block_};
    const ConstMatrix u_block{absl::MakeConstSpan(u_).subspan(i1 * d_ + i2), count, rest, d_};
    if (w_.col_stride == 1) {
      const Matrix dst{w_.data.subspan(i2), w_.rows, rest, w_.row_stride};
      return tensor::Gemm(-1.0f, err, Transpose::kNo, u_block, Transpose::kNo, 1.0f, dst);
    }
    // Stored transposed ([in, out]): the same update on W^T's rows i2..
    const Matrix dst{w_.data.subspan(i2 * w_.col_stride), rest, w_.rows, w_.col_stride};
    return tensor::Gemm(-1.0f, u_block, Transpose::kYes, err, Transpose::kYes, 1.0f, dst);
  }

  Work w_;
  int64_t d_;
  const std::vector<float>& u_;
  int n_, m_, block_;
  double sparsity_;
  Groups groups_;
  std::vector<bool> pruned_;
  std::vector<float> w1_, err1_;
  std::unique_ptr<bool[]> prune1_;
};

// H / samples in processing order.
std::vector<float> ScaledHessian(const CalibrationStats& stats,
                                 const std::vector<int64_t>& order) {
  const int64_t d = stats.dim;
  const float scale = 1.0f / static_cast<float>(std::max<uint64_t>(stats.samples, 1));
  std::vector<float> h(static_cast<size_t>(d) * d);
  for (int64_t a = 0; a < d; ++a) {
    const int64_t na = Natural(order, a);
    for (int64_t b = 0; b < d; ++b) h[a * d + b] = stats.gram[na * d + Natural(order, b)] * scale;
  }
  return h;
}

}  // namespace

SparseGptMethod::SparseGptMethod(const MethodConfig& config)
    : n_(config.n), m_(config.m),
      block_size_(config.block_size > 0 ? config.block_size : kSparseGptDefaultBlock),
      dampening_(config.dampening > 0 ? config.dampening : kSparseGptDefaultDampening) {
  if (m_ > 0) block_size_ = std::max(block_size_, m_);
}

absl::StatusOr<MethodOutcome> SparseGptMethod::Apply(const WeightTensor& weight,
                                                     const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  if (auto s = CheckCalibration("sparsegpt", weight, g); !s.ok()) return s;
  const int64_t d = g.cols();
  absl::Span<float> values = weight.values->span();

  // Work in place when the columns are evenly spaced and in natural order;
  // otherwise in one scratch copy in processing order.
  const std::vector<int64_t> order = ProcessingOrder(g, m_ > 0);
  const std::optional<int64_t> stride = UniformColumnStride(g);
  const bool in_place = order.empty() && stride && (*stride == 1 || g.row_stride == 1);
  std::vector<float> scratch;
  Work w;
  if (in_place) {
    w = {values, g.rows, d, g.row_stride, *stride};
  } else {
    scratch.resize(values.size());
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t p = 0; p < d; ++p) scratch[r * d + p] = values[g.Offset(r, Natural(order, p))];
    w = {absl::MakeSpan(scratch), g.rows, d, d, 1};
  }

  std::vector<float> h = ScaledHessian(*weight.calibration, order);
  // Inputs that are always zero: their weights cannot matter, so they are
  // zeroed and the Hessian made invertible there.
  double diag_sum = 0.0;
  for (int64_t j = 0; j < d; ++j) {
    if (h[j * d + j] == 0.0f) {
      h[j * d + j] = 1.0f;
      for (int64_t r = 0; r < g.rows; ++r) w.at(r, j) = 0.0f;
    }
    diag_sum += h[j * d + j];
  }

  double denominator = 0.0;
  {
    std::vector<float> rows_buf(static_cast<size_t>(kRowChunk) * d), product;
    for (int64_t first = 0; first < g.rows; first += kRowChunk) {
      const int64_t rows = std::min(kRowChunk, g.rows - first);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < d; ++c) rows_buf[r * d + c] = w.at(first + r, c);
      absl::StatusOr<double> part = SumOfQuadraticForms(
          tensor::MatrixOf(absl::MakeConstSpan(rows_buf).subspan(0, rows * d), rows, d),
          tensor::MatrixOf(absl::MakeConstSpan(h), d, d), product);
      if (!part.ok()) return part.status();
      denominator += *part;
    }
  }

  const double lambda = d > 0 ? dampening_ * diag_sum / d : 0.0;
  for (int64_t j = 0; j < d; ++j) h[j * d + j] += static_cast<float>(lambda);
  if (auto s = tensor::InverseUpperCholesky(tensor::MatrixOf(absl::MakeSpan(h), d, d));
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("tensor '", weight.info->name, "': ", s.message()));
  }

  Pruner pruner(w, h, n_, m_, block_size_, weight.sparsity, g.channels);
  if (auto s = pruner.Run(tick, weight.info->name); !s.ok()) return s;
  double e_norm2 = 0.0, dw_norm2 = 0.0;
  if (auto s = pruner.FinishAndMeasure(&e_norm2, &dw_norm2); !s.ok()) return s;

  if (!in_place) {
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t p = 0; p < d; ++p) values[g.Offset(r, Natural(order, p))] = scratch[r * d + p];
  }

  MethodOutcome outcome = SparsityOutcome(g.channels, n_, m_);
  outcome.reconstruction_error =
      RelativeReconstructionError(std::max(0.0, e_norm2 - lambda * dw_norm2), denominator);
  return outcome;
}

}  // namespace bonsai::methods
