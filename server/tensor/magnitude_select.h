// Exact k-smallest selection by magnitude in linear time, over one tensor or
// over many tensors seen one at a time (global scope).
//
// |w| of an IEEE float orders like its bit pattern with the sign cleared, so
// the k-th smallest magnitude is found by a two-pass radix selection: a
// histogram of the high 16 bits picks the bucket that holds the k-th value,
// a histogram of the low 16 bits inside that bucket pins it exactly. Memory
// is two fixed histograms, whatever the number of weights, and the tensors
// need not be in memory together: that is what lets global pruning stream.
//
// Ties at the threshold are broken by position: the earliest elements (in
// the order the data is observed and applied) are pruned first. The rule is
// fixed, so the same input always gives the same mask.
#ifndef BONSAI_SERVER_TENSOR_MAGNITUDE_SELECT_H_
#define BONSAI_SERVER_TENSOR_MAGNITUDE_SELECT_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace bonsai::tensor {

// Where to cut: every |w| whose bits are below `threshold_bits` is pruned,
// and so are the first `ties_to_prune` elements whose bits equal it.
struct MagnitudeCut {
  uint32_t threshold_bits = 0;
  uint64_t ties_to_prune = 0;
  bool prune_nothing = true;
};

class MagnitudeSelector {
 public:
  // Selects the `k` smallest magnitudes of everything observed.
  explicit MagnitudeSelector(uint64_t k);

  // Pass 1: call for every span, then FinishCoarsePass().
  void ObserveCoarse(absl::Span<const float> values);
  void FinishCoarsePass();
  // Pass 2: the same spans in the same order, then FinishFinePass().
  void ObserveFine(absl::Span<const float> values);
  MagnitudeCut FinishFinePass();

  uint64_t observed() const { return observed_; }
  // The count may be settled after the coarse pass, which sees every weight
  // anyway: a global target need not cost a pass of its own to count them.
  void set_k(uint64_t k) { k_ = k; }

 private:
  uint64_t k_;
  uint64_t observed_ = 0;
  std::vector<uint64_t> coarse_;  // 1 << 15 buckets: the sign bit is cleared
  std::vector<uint64_t> fine_;    // 1 << 16 buckets
  uint32_t bucket_ = 0;           // high 16 bits of the k-th magnitude
  uint64_t below_bucket_ = 0;     // elements in lower buckets
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
