// SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models
// Can Be Accurately Pruned in One-Shot", Algorithm 1): the OBS column sweep
// of obs_sweep.h with a pruning mask, unstructured or N:M, on the dampened
// calibration Hessian of obs_layer.h.
//
// With options.bits the sweep also quantizes, as the paper's joint mode
// does: each kept weight becomes the nearest point of its group's grid
// (rtn.h's options and grid), a pruned one 0, and the error of either is
// spread over the weights not yet visited. 0 is on every grid, so the mask
// is exact; a kept weight may also round to 0.
//
// Departures from the reference implementation, all deliberate:
//   - the unstructured mask of a block prunes exactly its share of
//     round(sparsity * size) (ties: lower flat index first), where the
//     reference's `<= threshold` prunes one more plus ties;
//   - N:M keeps the n best of m (ties: lower index), and a Conv weight is
//     processed in (kernel position, input channel) column order so its
//     groups are input channels at one kernel position, as in nm.h;
//   - the reconstruction error is reported exactly (see obs_sweep.h).
//
// Memory beyond the caller's weight and calibration Gram matrix when
// pruning alone: the Gram matrix itself becomes the dampened Hessian,
// factored and inverted in place (a Conv weight under N:M, whose columns are
// permuted, takes a permuted copy instead), one work buffer of max(512
// rows, 2 blocks) that holds row chunks for the error terms and the block's
// errors and scores in between, one bit per weight for the mask, and BLAS's
// own workspace; plus a copy of the weight when its columns are not evenly
// spaced (it is worked on in place for Linear, Gemm, MatMul and unpermuted
// Conv weights). For 4096 x 4096 with 4096 samples that is 8 + 2 MiB and
// about 8 MiB of OpenBLAS buffers. Quantizing takes a working copy of the
// weight instead of the mask bits (obs_sweep.h says why). If the job is
// cancelled the tensor is left in an intermediate state; the engine
// discards it.
#ifndef BONSAI_SERVER_METHODS_SPARSEGPT_H_
#define BONSAI_SERVER_METHODS_SPARSEGPT_H_

#include "server/methods/method.h"
#include "server/methods/quant_grid.h"

namespace bonsai::methods {

inline constexpr int kSparseGptDefaultBlock = 128;
inline constexpr double kSparseGptDefaultDampening = 0.01;

class SparseGptMethod : public Method {
 public:
  explicit SparseGptMethod(const MethodConfig& config);
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

 private:
  int n_, m_;  // both 0 for unstructured
  int block_size_;
  double dampening_;
  bool quantize_;  // options.bits > 0
  QuantSpec quant_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_SPARSEGPT_H_
