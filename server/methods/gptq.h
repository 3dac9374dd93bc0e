// GPTQ (Frantar, Ashkboos, Hoefler & Alistarh 2022, "GPTQ: Accurate
// Post-Training Quantization for Generative Pre-trained Transformers",
// Algorithm 1): the OBS column sweep of obs_sweep.h with quantization as
// its only rule. Each weight becomes the nearest point of its group's grid
// (rtn.h's options and quant_grid.h's grid), and its rounding error is
// spread over the weights of its row not yet quantized, in proportion to
// how the calibration inputs correlate them; column blocks with lazy batch
// updates, the Cholesky form of the inverse Hessian and its dampening are
// the paper's. A group's grid is chosen when the sweep first reaches one of
// its columns, from the current values of all of them (obs_sweep.h).
//
// act_order quantizes the columns in order of decreasing H_jj (ties: the
// lower column first; inputs that are always zero last), the paper's
// "act-order" heuristic, while the groups stay those of the natural layout
// (group of column c is c / group_size), so the output has the same
// layout either way.
//
// Memory beyond the caller's weight and calibration Gram matrix: a working
// copy of the weight (the original stays in the tensor until the end, for
// the reconstruction error), one grid per row and group, the work buffer of
// obs_layer.h, and with act_order a permuted copy of the Gram matrix in
// place of the original.
#ifndef BONSAI_SERVER_METHODS_GPTQ_H_
#define BONSAI_SERVER_METHODS_GPTQ_H_

#include "server/methods/method.h"
#include "server/methods/quant_grid.h"

namespace bonsai::methods {

class GptqMethod : public Method {
 public:
  explicit GptqMethod(const MethodConfig& config);
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

 private:
  QuantSpec spec_;
  int block_size_;
  double dampening_;
  bool act_order_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_GPTQ_H_
