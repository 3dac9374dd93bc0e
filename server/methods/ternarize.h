// Ternarization with BitNet b1.58's absmean quantizer (Ma et al. 2024):
//   W' = gamma * RoundClip(W / (gamma + eps), -1, 1),  gamma = mean|W|,
// over the whole tensor, or per output channel with per_channel. eps = 1e-5
// keeps an all-zero tensor or channel at zero instead of dividing by zero.
// Rounding is to nearest, halves to even (numpy and torch round alike).
#ifndef BONSAI_SERVER_METHODS_TERNARIZE_H_
#define BONSAI_SERVER_METHODS_TERNARIZE_H_

#include "server/methods/method.h"

namespace bonsai::methods {

inline constexpr double kTernarizeEpsilon = 1e-5;

class TernarizeMethod : public Method {
 public:
  explicit TernarizeMethod(const MethodConfig& config) : per_channel_(config.per_channel) {}
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

 private:
  bool per_channel_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_TERNARIZE_H_
