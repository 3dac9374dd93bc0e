// The column sweep of SparseGPT (Frantar & Alistarh 2023, Algorithm 1) and
// GPTQ (Frantar et al. 2022, Algorithm 1), which are one algorithm with two
// rules for the new value q of a weight: columns are visited left to right
// (in processing order) in blocks; inside a block, each weight's error
// (w - q) / U_jj is spread over the not-yet-visited weights of its row by
// an optimal brain surgeon update read from U (obs_layer.h); the block's
// errors reach the columns right of it in one lazy GEMM.
//   pruning:   q = 0 where the mask prunes, else w. Unstructured masks prune
//              each block's share of round(sparsity * size) by w^2 / U_jj^2
//              (ties: lower flat index); N:M keeps the n best of each group
//              of m, chosen when the sweep reaches the group, from its
//              current (already updated) weights.
//   quantizing: q = the nearest point of the grid of the weight's group
//              (quant_grid.h); pruned weights stay 0, which every grid holds.
// A group's grid is chosen when the sweep first reaches one of its columns,
// from the current values of all its columns: those not yet reached by the
// block's lazy update get it first. In natural order that is GPTQ's rule
// (the grid of columns j..j+g at column j); in a permuted order (act_order,
// N:M on a Conv weight) the same rule keeps the groups of the natural layout.
//
// Reconstruction error without a copy of the original weight, pruning
// alone: every update is W -= E U, one row of U per visited column, with E
// the matrix of scaled errors. So W' = W - E U exactly, and because
// U H_d U^T = I, tr(dW (H/n) dW^T) = ||E||^2 - lambda ||E U||^2. E is
// non-zero only where a weight was pruned, where W' is zero, so E is kept in
// the pruned slots of the weight itself until the end, with one bit per
// weight saying which those are. Quantizing, E is dense: ||E||^2 is summed
// during the sweep and ||dW||^2 = ||W - W'||^2 taken from the untouched
// tensor against the working copy (ObsLayer::WriteBack), which saves the
// triangular product at the cost of that copy.
#ifndef BONSAI_SERVER_METHODS_OBS_SWEEP_H_
#define BONSAI_SERVER_METHODS_OBS_SWEEP_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/methods/method.h"
#include "server/methods/obs_layer.h"
#include "server/methods/quant_grid.h"

namespace bonsai::methods {

struct PruneSpec {
  int n = 0, m = 0;  // N:M when m > 0
  double sparsity = 0.0;  // unstructured, when m == 0
  // Reduction channels; for N:M, processing column p is channel p % channels
  // (the kernel is 1 or the order kernel-major).
  int64_t channels = 1;
};

// The quantization groups in processing order: group of natural column c is
// c / width, and each group's processing positions, ascending.
class QuantGroups {
 public:
  QuantGroups(const std::vector<int64_t>& order, int64_t d, const QuantSpec& spec);
  int64_t count() const { return static_cast<int64_t>(first_.size()); }
  int64_t group_of(int64_t p) const { return group_of_[p]; }
  absl::Span<const int64_t> positions(int64_t group) const {
    return absl::MakeConstSpan(positions_)
        .subspan(start_[group], start_[group + 1] - start_[group]);
  }
  // Groups in the order the sweep first reaches them.
  const std::vector<int64_t>& by_first() const { return by_first_; }
  int64_t first(int64_t group) const { return first_[group]; }

 private:
  std::vector<int64_t> group_of_, positions_, start_, first_, by_first_;
};

class ObsSweep {
 public:
  // `quant` null: pruning alone. Quantizing needs a layer prepared with
  // Options::copy. Both must outlive the sweep.
  ObsSweep(ObsLayer& layer, const PruneSpec& prune, const QuantSpec* quant, int block_size);
  ~ObsSweep();

  // Runs the blocks; `tick` gets the fraction done after each.
  absl::Status Run(const ProgressTick& tick, absl::string_view method, absl::string_view tensor);

  // Leaves W' in the tensor and returns tr(dW (H/n) dW^T) >= 0.
  absl::StatusOr<double> Finish();

  // Quantizing, after Run: the grid of each row and natural group (rows x
  // groups, row-major), which packed output stores beside the codes.
  const std::vector<Grid>& grids() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_OBS_SWEEP_H_
