#include "server/methods/obs_sweep.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "server/methods/reconstruction.h"
#include "server/methods/selection.h"
#include "server/tensor/blas.h"
#include "server/tensor/magnitude_select.h"

namespace bonsai::methods {
namespace {

using tensor::ConstMatrix;
using tensor::Matrix;
using tensor::Transpose;

constexpr float kInf = std::numeric_limits<float>::infinity();

// N:M groups in processing order, where column p's channel is p % channels.
class NMGroups {
 public:
  NMGroups(int64_t channels, int m)
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

}  // namespace

class ObsSweep::Impl {
 public:
  Impl(ObsLayer& layer, const PruneSpec& prune, int block)
      : layer_(layer), w_(layer.w()), d_(w_.cols), u_(layer.u()), n_(prune.n), m_(prune.m),
        block_(block), sparsity_(prune.sparsity), nm_groups_(prune.channels, prune.m),
        work_(layer.work()), row_(block), err1_(work_.subspan(0, w_.rows * block)),
        scores_(work_.subspan(w_.rows * block, w_.rows * block)),
        prune1_(new bool[err1_.size()]), group_scores_(std::max(prune.m, 0)),
        group_keep_(new bool[std::max(prune.m, 0)]),
        pruned_(static_cast<size_t>(w_.rows) * d_, false) {}

  absl::Status Run(const ProgressTick& tick, absl::string_view method,
                   absl::string_view tensor) {
    for (int64_t i1 = 0; i1 < d_;) {
      const int64_t i2 = i1 + block_ >= d_ ? d_ : nm_groups_.AlignEnd(i1 + block_);
      SweepBlock(i1, i2);
      if (auto s = LazyUpdate(i1, i2); !s.ok()) return s;
      if (tick && !tick(static_cast<double>(i2) / d_)) {
        return absl::CancelledError(absl::StrCat(method, " stopped at tensor '", tensor, "'"));
      }
      i1 = i2;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<double> Finish() {
    double e_norm2 = 0.0, dw_norm2 = 0.0;
    if (auto s = FinishAndMeasure(&e_norm2, &dw_norm2); !s.ok()) return s;
    layer_.WriteBack();
    return std::max(0.0, e_norm2 - layer_.lambda() * dw_norm2);
  }

 private:
  float U(int64_t i, int64_t j) const { return u_[i * d_ + j]; }

  // ||E||^2 and ||E U||^2, then zeroes the pruned slots (which held E).
  absl::Status FinishAndMeasure(double* e_norm2, double* dw_norm2) {
    *e_norm2 = 0.0;
    absl::StatusOr<double> eu = SumOverRowChunks(
        w_.rows, d_, work_, tensor::MatrixOf(u_, d_, d_), Transpose::kNo,
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
  // groups depend on that row alone, so each row is finished
  // while it sits in L1 (a column at a time streamed the whole block through
  // the cache once per column). The arithmetic per weight is the same, in
  // the same order.
  void SweepBlock(int64_t i1, int64_t i2) {
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
        if (m_ > 0 && nm_groups_.starts_group(i1 + j)) ChooseGroupMask(i1, j, w_row, prune_row);
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
    const ConstMatrix u_block{u_.subspan(i1 * d_ + i2), count, rest, d_};
    if (w_.col_stride == 1) {
      const Matrix dst{w_.data.subspan(i2), w_.rows, rest, w_.row_stride};
      return tensor::Gemm(-1.0f, err, Transpose::kNo, u_block, Transpose::kNo, 1.0f, dst);
    }
    // Stored transposed ([in, out]): the same update on W^T's rows i2..
    const Matrix dst{w_.data.subspan(i2 * w_.col_stride), rest, w_.rows, w_.col_stride};
    return tensor::Gemm(-1.0f, u_block, Transpose::kYes, err, Transpose::kYes, 1.0f, dst);
  }

  ObsLayer& layer_;
  const ObsMatrix& w_;
  int64_t d_;
  absl::Span<const float> u_;
  int n_, m_, block_;
  double sparsity_;
  NMGroups nm_groups_;
  absl::Span<float> work_;          // err1_ and scores_, then the final row chunks
  std::vector<float> row_;          // the row of the block being swept
  absl::Span<float> err1_;          // the block's errors, rows x block_
  absl::Span<float> scores_;        // the block's scores, rows x its width
  std::unique_ptr<bool[]> prune1_;  // the block's mask, rows x its width
  std::vector<float> candidates_, group_scores_;
  std::vector<uint32_t> histogram_ = std::vector<uint32_t>(1 << 16);
  std::unique_ptr<bool[]> group_keep_;
  std::vector<bool> pruned_;        // which slots hold E
};

ObsSweep::ObsSweep(ObsLayer& layer, const PruneSpec& prune, int block_size)
    : impl_(std::make_unique<Impl>(layer, prune, block_size)) {}

ObsSweep::~ObsSweep() = default;

absl::Status ObsSweep::Run(const ProgressTick& tick, absl::string_view method,
                           absl::string_view tensor) {
  return impl_->Run(tick, method, tensor);
}

absl::StatusOr<double> ObsSweep::Finish() { return impl_->Finish(); }

}  // namespace bonsai::methods
