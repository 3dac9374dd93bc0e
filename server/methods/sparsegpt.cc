#include "server/methods/sparsegpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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
// per weight saying which slots those are. ||E U||^2 and the denominator
// (see Apply) are triangular products over row chunks, each half the flops
// of a Gemm; with the algorithm's own lazy updates and the Cholesky steps
// they are the run's BLAS time.

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

// w[0, n) -= a * u[0, n), eight lanes at a time: -O2 leaves this loop
// scalar (its trip count is unknown), and it is the algorithm's inner loop.
// Each lane does the scalar loop's multiply and subtract, so results match it.
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

constexpr float kInf = std::numeric_limits<float>::infinity();

// The buffer that serves, in turn, the denominator's row chunks, the
// block's errors and scores, and the final row chunks: one buffer, so the
// peak is the largest of these and not their sum.
std::vector<float> WorkBuffer(int64_t rows, int64_t d, int block) {
  return std::vector<float>(std::max(std::min(rows, kRowChunk) * d, 2 * rows * block));
}

// Sum of ||chunk op(t)||^2 over the weight's rows in chunks as large as
// `buffer` allows; fill_row(r, row) writes row r of the chunk first.
template <typename FillRow>
absl::StatusOr<double> SumOverRowChunks(int64_t rows, int64_t d, absl::Span<float> buffer,
                                        ConstMatrix t, Transpose trans_t, FillRow fill_row) {
  if (d == 0) return 0.0;
  const int64_t chunk_rows = static_cast<int64_t>(buffer.size()) / d;
  double sum = 0.0;
  for (int64_t first = 0; first < rows; first += chunk_rows) {
    const int64_t count = std::min(chunk_rows, rows - first);
    for (int64_t r = 0; r < count; ++r) fill_row(first + r, buffer.subspan(r * d, d));
    absl::StatusOr<double> part =
        SquaredNormTimesUpper(tensor::MatrixOf(buffer.subspan(0, count * d), count, d), t, trans_t);
    if (!part.ok()) return part.status();
    sum += *part;
  }
  return sum;
}

class Pruner {
 public:
  // `work` holds at least 2 * rows * block floats (see WorkBuffer).
  Pruner(Work w, absl::Span<const float> u, int n, int m, int block, double sparsity,
         int64_t channels, absl::Span<float> work)
      : w_(w), d_(w.cols), u_(u), n_(n), m_(m), block_(block), sparsity_(sparsity),
        groups_(channels, m), pruned_(static_cast<size_t>(w.rows) * w.cols, false),
        work_(work), row_(block), err1_(work.subspan(0, w.rows * block)),
        scores_(work.subspan(w.rows * block, w.rows * block)),
        prune1_(new bool[err1_.size()]), group_scores_(std::max(m, 0)),
        group_keep_(new bool[std::max(m, 0)]) {}

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
    *e_norm2 = 0.0;
    absl::StatusOr<double> eu = SumOverRowChunks(
        w_.rows, d_, work_, tensor::MatrixOf(absl::MakeConstSpan(u_), d_, d_), Transpose::kNo,
        [&](int64_t r, absl::Span<float> e) {
          for (int64_t c = 0; c < d_; ++c) {
            float& slot = w_.at(r, c);
            const bool pruned = pruned_[r * d_ + c];
            e[c] = pruned ? slot : 0.0f;
            if (pruned) slot = 0.0f;
          }
          *e_norm2 += SumOfSquares(e);
        });
    if (!eu.ok()) return eu.status();
    *dw_norm2 = *eu;
    return absl::OkStatus();
  }

 private:
  float U(int64_t i, int64_t j) const { return u_[i * d_ + j]; }

  // Chooses the unstructured mask of block [i1, i2): its share of the
  // tensor's round(sparsity * size), by w^2 / U_jj^2, smallest first, ties
  // to the lower flat index as in PruneSmallestK. The k-th smallest score is
  // found from a histogram of the scores' top 16 bits and a selection among
  // the few in its bucket: ordering rows * 128 scores with nth_element for
  // each block was a tenth of the run.
  void ChooseBlockMask(int64_t i1, int64_t count) {
    const int64_t rows = w_.rows;
    const uint64_t size = rows * count;
    const uint64_t k = tensor::PruneCount(sparsity_, rows * (i1 + count)) -
                       tensor::PruneCount(sparsity_, rows * i1);
    bool* prune = prune1_.get();
    if (k == 0 || k >= size) {
      std::fill(prune, prune + size, k > 0);
      return;
    }
    std::fill(histogram_.begin(), histogram_.end(), 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < count; ++j) {
        const float diag = U(i1 + j, i1 + j);
        const float w = w_.at(r, i1 + j);
        float score = w * w / (diag * diag);
        // Scores are >= 0, so their bits order as they do; a NaN weight ranks last.
        if (std::isnan(score)) score = kInf;
        scores_[r * count + j] = score;
        ++histogram_[Bucket(score)];
      }
    uint64_t below = 0;  // scores in buckets below the k-th's
    uint32_t bucket = 0;
    while (below + histogram_[bucket] < k) below += histogram_[bucket++];
    candidates_.clear();
    for (uint64_t i = 0; i < size; ++i)
      if (Bucket(scores_[i]) == bucket) candidates_.push_back(scores_[i]);
    const uint64_t nth = k - 1 - below;
    std::nth_element(candidates_.begin(), candidates_.begin() + nth, candidates_.end());
    const float threshold = candidates_[nth];
    uint64_t ties = k - below;  // how many scores equal to threshold to prune
    for (uint64_t i = 0; i < nth; ++i) ties -= candidates_[i] < threshold;
    for (uint64_t i = 0; i < size; ++i) {
      const float score = scores_[i];
      const bool tie = score == threshold && ties > 0;
      ties -= tie;
      prune[i] = score < threshold || tie;
    }
  }

  static uint32_t Bucket(float score) {
    uint32_t bits;
    std::memcpy(&bits, &score, sizeof bits);
    return bits >> 16;
  }

  // N:M mask of the group starting at block column j of one row, from its
  // current (already updated) weights, as the reference does.
  void ChooseGroupMask(int64_t i1, int64_t j, const float* w_row, bool* prune_row) {
    for (int t = 0; t < m_; ++t) {
      const float diag = U(i1 + j + t, i1 + j + t);
      group_scores_[t] = w_row[j + t] * w_row[j + t] / (diag * diag);
    }
    KeepLargestN(group_scores_, n_, absl::MakeSpan(group_keep_.get(), m_));
    for (int t = 0; t < m_; ++t) prune_row[j + t] = !group_keep_[t];
  }

  // Block [i1, i2) row by row: inside a block a row's updates and its N:M
  // groups depend on that row alone, so each row is finished while it sits
  // in L1 (a column at a time streamed the whole block through the cache
  // once per column). The arithmetic per weight is the same, in the same order.
  void PruneBlock(int64_t i1, int64_t i2) {
    const int64_t count = i2 - i1;
    if (m_ == 0) ChooseBlockMask(i1, count);
    for (int64_t r = 0; r < w_.rows; ++r) {
      float* w_row = row_.data();
      bool* prune_row = prune1_.get() + r * count;
      float* err_row = err1_.data() + r * block_;
      for (int64_t j = 0; j < count; ++j) {
        w_row[j] = w_.at(r, i1 + j);
        if (m_ > 0) prune_row[j] = false;
      }
      for (int64_t j = 0; j < count; ++j) {
        if (m_ > 0 && groups_.starts_group(i1 + j)) ChooseGroupMask(i1, j, w_row, prune_row);
        const float diag = U(i1 + j, i1 + j);
        const float w = w_row[j];
        const float q = prune_row[j] ? 0.0f : w;
        const float err = (w - q) / diag;
        err_row[j] = err;
        w_row[j] = q;
        if (err != 0.0f) {
          SubtractScaled(err, u_.data() + (i1 + j) * d_ + i1 + j + 1, w_row + j + 1,
                         count - j - 1);
        }
      }
      for (int64_t j = 0; j < count; ++j) {
        pruned_[r * d_ + i1 + j] = prune_row[j];
        w_.at(r, i1 + j) = prune_row[j] ? err_row[j] : w_row[j];
      }
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
  absl::Span<const float> u_;
  int n_, m_, block_;
  double sparsity_;
  Groups groups_;
  std::vector<bool> pruned_;
  absl::Span<float> work_;          // err1_ and scores_, then the final row chunks
  std::vector<float> row_;          // the row of the block being pruned
  absl::Span<float> err1_;          // the block's errors, rows x block_
  absl::Span<float> scores_;        // the block's scores, rows x its width
  std::unique_ptr<bool[]> prune1_;  // the block's mask, rows x its width
  std::vector<float> candidates_, group_scores_;
  std::vector<uint32_t> histogram_ = std::vector<uint32_t>(1 << 16);
  std::unique_ptr<bool[]> group_keep_;
};

// H / samples in processing order. In natural order that is the
// calibration's own storage, scaled in place (the statistics are this
// Apply's to consume, method.h); a permuted order needs a copy in `owned`.
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

  std::vector<float> owned_hessian;
  const absl::Span<float> h = ScaledHessian(*weight.calibration, order, owned_hessian);
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

  // The dampened H_d = H/n + lambda I is factored once as V V^T with V upper
  // (a Cholesky factorization of H_d with rows and columns reversed), and
  // V^-1 is then the U the algorithm needs: U^T U = H_d^-1, U upper. That is
  // one factorization and one triangular inverse, half the flops of
  // factoring H_d, inverting it and factoring the inverse as the paper's
  // code does. In between, V gives the denominator tr(W (H/n) W^T) =
  // ||W V||^2 - lambda ||W||^2, a triangular product at half the flops of W
  // times H. Dead inputs are zero columns of W, so their entries of H_d do
  // not count.
  const float lambda = d > 0 ? static_cast<float>(dampening_ * diag_sum / d) : 0.0f;
  for (int64_t j = 0; j < d; ++j) h[j * d + j] += lambda;
  const Matrix factor = tensor::MatrixOf(h, d, d);
  auto in_tensor = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("tensor '", weight.info->name, "': ", s.message()));
  };
  if (auto s = tensor::ReversedCholeskyUpper(factor); !s.ok()) return in_tensor(s);
  std::vector<float> work = WorkBuffer(g.rows, d, block_size_);
  double w_norm2 = 0.0;
  absl::StatusOr<double> wr_norm2 = SumOverRowChunks(
      g.rows, d, absl::MakeSpan(work), factor, Transpose::kNo,
      [&](int64_t r, absl::Span<float> row) {
        for (int64_t c = 0; c < d; ++c) row[c] = w.at(r, c);
        w_norm2 += SumOfSquares(row);
      });
  if (!wr_norm2.ok()) return wr_norm2.status();
  const double denominator = *wr_norm2 - lambda * w_norm2;
  if (auto s = tensor::InvertUpper(factor); !s.ok()) return in_tensor(s);

  Pruner pruner(w, h, n_, m_, block_size_, weight.sparsity, g.channels,
                absl::MakeSpan(work));
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
