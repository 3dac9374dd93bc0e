// N:M semi-structured sparsity: in every group of m consecutive weights along
// the reduction axis, the n largest |w| are kept (ties: the lower index).
// For a Conv weight a group is m consecutive input channels at the same
// kernel position, the pattern sparse tensor cores accelerate. Channels that
// do not fill a last group stay dense and the outcome's note says so.
#ifndef BONSAI_SERVER_METHODS_NM_H_
#define BONSAI_SERVER_METHODS_NM_H_

#include "server/methods/method.h"

namespace bonsai::methods {

class NMMethod : public Method {
 public:
  explicit NMMethod(const MethodConfig& config) : n_(config.n), m_(config.m) {}
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

 private:
  int n_, m_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_NM_H_
