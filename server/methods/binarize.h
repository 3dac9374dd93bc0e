// Binarization (BinaryConnect, Courbariaux et al. 2015; scaled as in
// XNOR-Net, Rastegari et al. 2016): W' = alpha * sign(W) with alpha = mean|W|
// of each output channel, the scale that minimises ||W - alpha sign(W)||.
// sign(0) is +1, so every weight is one of two values per channel and packs
// into one bit.
#ifndef BONSAI_SERVER_METHODS_BINARIZE_H_
#define BONSAI_SERVER_METHODS_BINARIZE_H_

#include "server/methods/method.h"

namespace bonsai::methods {

class BinarizeMethod : public Method {
 public:
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_BINARIZE_H_
