// Structured pruning: whole output channels with the smallest L1 or L2 norm
// become zero (mask mode). Physical removal from the graph is a separate
// transform (formats/onnx_channel_pruning.h) that the engine runs with the
// same choice of channels, which is why ChannelsToRemove is public.
#ifndef BONSAI_SERVER_METHODS_STRUCTURED_H_
#define BONSAI_SERVER_METHODS_STRUCTURED_H_

#include <cstdint>
#include <vector>

#include "server/methods/method.h"

namespace bonsai::methods {

// The output channels to prune, ascending: exactly round(fraction * channels)
// with the smallest norms (ties: the lower index goes first), except that at
// least one channel is always kept so the layer still exists after physical
// removal. Empty for tensors of rank < 2.
std::vector<int64_t> ChannelsToRemove(const WeightTensor& weight, NormKind norm,
                                      double fraction);

class StructuredMethod : public Method {
 public:
  explicit StructuredMethod(const MethodConfig& config) : norm_(config.norm) {}
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

 private:
  NormKind norm_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_STRUCTURED_H_
