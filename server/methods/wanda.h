// Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large
// Language Models"): weights are scored by |W_ij| * ||X_j||_2, the weight
// times the norm of the input feature it multiplies (sqrt(H_jj) of the
// calibration Gram matrix), and compared within each output row: every row
// loses round(sparsity * d_in) weights, or, with n and m set, keeps n of
// every m in the N:M groups of nm.h. No weight is updated.
#ifndef BONSAI_SERVER_METHODS_WANDA_H_
#define BONSAI_SERVER_METHODS_WANDA_H_

#include "server/methods/method.h"

namespace bonsai::methods {

class WandaMethod : public Method {
 public:
  explicit WandaMethod(const MethodConfig& config) : n_(config.n), m_(config.m) {}
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

 private:
  int n_, m_;  // both 0 for unstructured
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_WANDA_H_
