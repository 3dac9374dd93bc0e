#include "server/methods/obs_sweep.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>

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

// A quantization group first reached inside the current block, at block
// column `at`: its other columns inside the block (block-relative) and past
// it, and for those past it the rows of U that the block's updates so far
// would bring them, `correction` ((at) x outside.size()), when there are any.
struct Touch {
  int64_t at = 0, group = 0;
  std::vector<int64_t> inside, outside;
  std::vector<float> correction;
};

}  // namespace

QuantGroups::QuantGroups(const std::vector<int64_t>& order, int64_t d, const QuantSpec& spec) {
  const int64_t width = std::max<int64_t>(spec.GroupColumns(d), 1);
  const int64_t count = (d + width - 1) / width;
  group_of_.resize(d);
  start_.assign(count + 1, 0);
  for (int64_t p = 0; p < d; ++p) {
    group_of_[p] = Natural(order, p) / width;
    ++start_[group_of_[p] + 1];
  }
  std::partial_sum(start_.begin(), start_.end(), start_.begin());
  positions_.resize(d);
  std::vector<int64_t> next(start_.begin(), start_.end() - 1);
  for (int64_t p = 0; p < d; ++p) positions_[next[group_of_[p]]++] = p;
  first_.resize(count);
  for (int64_t g = 0; g < count; ++g) first_[g] = positions_[start_[g]];
  by_first_.resize(count);
  std::iota(by_first_.begin(), by_first_.end(), 0);
  std::sort(by_first_.begin(), by_first_.end(),
            [&](int64_t a, int64_t b) { return first_[a] < first_[b]; });
}

class ObsSweep::Impl {
 public:
  Impl(ObsLayer& layer, const PruneSpec& prune, const QuantSpec* quant, int block)
      : layer_(layer), w_(layer.w()), d_(w_.cols), u_(layer.u()), n_(prune.n), m_(prune.m),
        block_(block), sparsity_(prune.sparsity), nm_groups_(prune.channels, prune.m),
        work_(layer.work()), row_(block), err1_(work_.subspan(0, w_.rows * block)),
        scores_(work_.subspan(w_.rows * block, w_.rows * block)),
        prune1_(new bool[err1_.size()]), group_scores_(std::max(prune.m, 0)),
        group_keep_(new bool[std::max(prune.m, 0)]) {
    if (quant != nullptr) {
      quant_ = *quant;
      quantizing_ = true;
      max_code_ = quant->max_code();
      groups_.emplace(layer.order(), d_, *quant);
      grids_.resize(static_cast<size_t>(w_.rows) * groups_->count());
    } else {
      pruned_.assign(static_cast<size_t>(w_.rows) * d_, false);
    }
  }

  absl::Status Run(const ProgressTick& tick, absl::string_view method,
                   absl::string_view tensor) {
    for (int64_t i1 = 0; i1 < d_;) {
      const int64_t i2 = i1 + block_ >= d_ ? d_ : nm_groups_.AlignEnd(i1 + block_);
      if (quantizing_) PlanTouches(i1, i2);
      SweepBlock(i1, i2);
      if (auto s = LazyUpdate(i1, i2); !s.ok()) return s;
      if (tick && !tick(static_cast<double>(i2) / d_)) {
        return absl::CancelledError(absl::StrCat(method, " stopped at tensor '", tensor, "'"));
      }
      i1 = i2;
    }
    return absl::OkStatus();
  }

  const std::vector<Grid>& grids() const { return grids_; }

  absl::StatusOr<double> Finish() {
    if (quantizing_) {
      const double change = layer_.WriteBack();
      return std::max(0.0, e_norm2_ - layer_.lambda() * change);
    }
    double e_norm2 = 0.0, dw_norm2 = 0.0;
    if (auto s = FinishAndMeasure(&e_norm2, &dw_norm2); !s.ok()) return s;
    layer_.WriteBack();
    return std::max(0.0, e_norm2 - layer_.lambda() * dw_norm2);
  }

 private:
  float U(int64_t i, int64_t j) const { return u_[i * d_ + j]; }

  // Pruning alone: ||E||^2 and ||E U||^2, then zeroes the pruned slots
  // (which held E).
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

  // The quantization groups first reached in block [i1, i2), and what their
  // grids need; the positions are the same for every row.
  void PlanTouches(int64_t i1, int64_t i2) {
    touches_.clear();
    touch_at_.assign(i2 - i1, -1);
    const std::vector<int64_t>& by_first = groups_->by_first();
    for (; next_touch_ < by_first.size() && groups_->first(by_first[next_touch_]) < i2;
         ++next_touch_) {
      Touch t;
      t.group = by_first[next_touch_];
      t.at = groups_->first(t.group) - i1;
      for (int64_t p : groups_->positions(t.group)) {
        if (p < i2) {
          t.inside.push_back(p - i1);
        } else {
          t.outside.push_back(p);
        }
      }
      const int64_t n_out = static_cast<int64_t>(t.outside.size());
      if (t.at > 0 && n_out > 0) {
        t.correction.resize(t.at * n_out);
        for (int64_t j = 0; j < t.at; ++j)
          for (int64_t s = 0; s < n_out; ++s) t.correction[j * n_out + s] = U(i1 + j, t.outside[s]);
      }
      touch_at_[t.at] = static_cast<int64_t>(touches_.size());
      touches_.push_back(std::move(t));
    }
  }

  // The grid of row r in the group first reached at block column t.at, from
  // the current values of all its columns: in the row buffer inside the
  // block, and past it in the weight less the block's updates so far.
  void ChooseRowGrid(int64_t r, const Touch& t, const float* w_row, const float* err_row) {
    float lo = 0.0f, hi = 0.0f;
    for (int64_t j : t.inside) {
      lo = w_row[j] < lo ? w_row[j] : lo;
      hi = w_row[j] > hi ? w_row[j] : hi;
    }
    if (!t.outside.empty()) {
      const int64_t n_out = static_cast<int64_t>(t.outside.size());
      current_.resize(n_out);
      for (int64_t s = 0; s < n_out; ++s) current_[s] = w_.at(r, t.outside[s]);
      if (!t.correction.empty()) {
        for (int64_t j = 0; j < t.at; ++j)
          if (err_row[j] != 0.0f)
            SubtractScaled(err_row[j], t.correction.data() + j * n_out, current_.data(), n_out);
      }
      float out_lo, out_hi;
      RangeWithZero(current_, &out_lo, &out_hi);
      lo = std::min(lo, out_lo);
      hi = std::max(hi, out_hi);
    }
    grids_[r * groups_->count() + t.group] = ChooseGrid(lo, hi, quant_);
  }

  // Block [i1, i2) row by row: inside a block a row's updates, its N:M
  // groups and its grids depend on that row alone, so each row is finished
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
      const Grid* row_grids = quantizing_ ? grids_.data() + r * groups_->count() : nullptr;
      for (int64_t j = 0; j < count; ++j) {
        w_row[j] = w_.at(r, i1 + j);
        if (m_ > 0) prune_row[j] = false;
      }
      for (int64_t j = 0; j < count; ++j) {
        if (m_ > 0 && nm_groups_.starts_group(i1 + j)) ChooseGroupMask(i1, j, w_row, prune_row);
        const float diag = U(i1 + j, i1 + j);
        const float w = w_row[j];
        if (quantizing_ && touch_at_[j] >= 0) {
          ChooseRowGrid(r, touches_[touch_at_[j]], w_row, err_row);
        }
        const float q = prune_row[j]  ? 0.0f
                        : quantizing_ ? Quantize(w, row_grids[groups_->group_of(i1 + j)], max_code_)
                                      : w;
        const float err = (w - q) / diag;
        err_row[j] = err;
        w_row[j] = q;
        if (quantizing_) e_norm2_ += static_cast<double>(err) * err;
        if (err != 0.0f) {
          SubtractScaled(err, u_.data() + (i1 + j) * d_ + i1 + j + 1, w_row + j + 1,
                         count - j - 1);
        }
      }
      for (int64_t j = 0; j < count; ++j) {
        if (quantizing_) {
          w_.at(r, i1 + j) = w_row[j];
        } else {
          pruned_[r * d_ + i1 + j] = prune_row[j];
          w_.at(r, i1 + j) = prune_row[j] ? err_row[j] : w_row[j];
        }
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
  std::vector<bool> pruned_;        // pruning alone: which slots hold E
  absl::Span<float> work_;          // err1_ and scores_, then the final row chunks
  std::vector<float> row_;          // the row of the block being swept
  absl::Span<float> err1_;          // the block's errors, rows x block_
  absl::Span<float> scores_;        // the block's scores, rows x its width
  std::unique_ptr<bool[]> prune1_;  // the block's mask, rows x its width
  std::vector<float> candidates_, group_scores_;
  std::vector<uint32_t> histogram_ = std::vector<uint32_t>(1 << 16);
  std::unique_ptr<bool[]> group_keep_;

  // Quantizing.
  bool quantizing_ = false;
  QuantSpec quant_;
  float max_code_ = 0.0f;
  std::optional<QuantGroups> groups_;
  std::vector<Grid> grids_;          // rows x groups
  std::vector<Touch> touches_;       // the current block's
  std::vector<int64_t> touch_at_;    // block column -> index in touches_, or -1
  size_t next_touch_ = 0;            // in groups_->by_first()
  std::vector<float> current_;
  double e_norm2_ = 0.0;             // ||E||^2
};

ObsSweep::ObsSweep(ObsLayer& layer, const PruneSpec& prune, const QuantSpec* quant,
                   int block_size)
    : impl_(std::make_unique<Impl>(layer, prune, quant, block_size)) {}

ObsSweep::~ObsSweep() = default;

absl::Status ObsSweep::Run(const ProgressTick& tick, absl::string_view method,
                           absl::string_view tensor) {
  return impl_->Run(tick, method, tensor);
}

absl::StatusOr<double> ObsSweep::Finish() { return impl_->Finish(); }

const std::vector<Grid>& ObsSweep::grids() const { return impl_->grids(); }

}  // namespace bonsai::methods
