// Exact k-smallest selection by magnitude in linear time, over one tensor or
// over many tensors seen one at a time (global scope), in up to four passes
// over the same spans in the same order:
//   0  count and sample the weights (magnitude_bracket.h);
//   1  collect the weights inside the bracket the sample predicts, which
//      settles the cut on all but adversarial data;
//   2, 3  otherwise a radix selection: a histogram of the high 16 bits of
//      |w| picks the bucket holding the k-th value, a histogram of the low
//      16 bits inside it pins it exactly, on any data.
// Memory is fixed (samples, a capped bracket, two histograms), whatever the
// number of weights, and the tensors need not be in memory together: that
// is what lets global pruning stream.
//
// Ties at the threshold are broken by position: the earliest elements (in
// the order the data is observed and applied) are pruned first. The rule is
// fixed, so the same input always gives the same mask.
#ifndef BONSAI_SERVER_TENSOR_MAGNITUDE_SELECT_H_
#define BONSAI_SERVER_TENSOR_MAGNITUDE_SELECT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "server/tensor/magnitude_bracket.h"
#include "server/tensor/magnitude_cut.h"

namespace bonsai::tensor {

class MagnitudeSelector {
 public:
  static constexpr int kMaxPasses = 4;

  // Selects the `k` smallest magnitudes of everything observed; k may be
  // settled later with set_k, before FinishPass(0).
  explicit MagnitudeSelector(uint64_t k = 0, BracketLimits limits = {});
  ~MagnitudeSelector();

  // False once an earlier pass settled the cut.
  bool NeedsPass(int pass) const { return !cut_.has_value() && pass < kMaxPasses; }
  void Observe(int pass, absl::Span<const float> values);
  void FinishPass(int pass);

  // Weights seen by pass 0.
  uint64_t observed() const { return bracket_.observed(); }
  // The count may be settled after the first pass, which sees every weight
  // anyway: a global target need not cost a pass of its own to count them.
  void set_k(uint64_t k) { k_ = k; }
  // The cut, once no pass is needed any more.
  const std::optional<MagnitudeCut>& cut() const { return cut_; }

 private:
  class Radix;

  uint64_t k_;
  MagnitudeBracket bracket_;
  std::unique_ptr<Radix> radix_;  // only when the bracket could not settle it
  std::optional<MagnitudeCut> cut_;
};

// Applies a cut to spans in the same order they were observed, carrying the
// count of ties still to prune from one span to the next.
class MagnitudeMasker {
 public:
  explicit MagnitudeMasker(const MagnitudeCut& cut) : cut_(cut), ties_left_(cut.ties_to_prune) {}
  // Zeroes the selected elements in place; returns how many it selected
  // (including elements that were zero already).
  uint64_t Apply(absl::Span<float> values);

 private:
  MagnitudeCut cut_;
  uint64_t ties_left_;
};

// Convenience for one tensor: prunes exactly k smallest magnitudes in place.
void PruneSmallestMagnitudes(absl::Span<float> values, uint64_t k);

// round(sparsity * n), the number of weights a target sparsity asks for.
uint64_t PruneCount(double sparsity, uint64_t n);

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_MAGNITUDE_SELECT_H_
