// Structured pruning: whole output channels with the smallest L1 or L2 norm
// become zero (mask mode). Physical removal from the graph is graph surgery
// (surgery/channel_pruning.h) that the engine runs; it scores and chooses
// channels with ChannelNorms and LowestChannels below, so both modes remove
// the same channels of the same weights.
#ifndef BONSAI_SERVER_METHODS_STRUCTURED_H_
#define BONSAI_SERVER_METHODS_STRUCTURED_H_

#include <cstdint>
#include <vector>

#include "server/methods/method.h"

namespace bonsai::methods {

// Per output channel, the L1 or L2 norm of its weights, summed in double in
// column order and kept in double: rounding them to float would make
// channels that differ tie, and ties go by index. Empty for tensors of
// rank < 2.
std::vector<double> ChannelNorms(const WeightTensor& weight, NormKind norm);

// The `count` channels with the lowest scores, ascending; equal scores lose
// the lower index first.
std::vector<int64_t> LowestChannels(absl::Span<const double> scores, uint64_t count);

// The output channels to prune, ascending: exactly round(fraction * channels)
// with the smallest norms (ties: the lower index goes first), except that at
// least one channel is always kept so the layer still exists after physical
// removal. Empty for tensors of rank < 2.
std::vector<int64_t> ChannelsToRemove(const WeightTensor& weight, NormKind norm,
                                      double fraction);

class StructuredMethod : public Method {
 public:
  explicit StructuredMethod(const MethodConfig& config)
      : norm_(config.norm), mode_(config.structured_mode) {}
  bool removes_channels_from_graph() const override { return mode_ == StructuredMode::kPhysical; }
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

 private:
  NormKind norm_;
  StructuredMode mode_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_STRUCTURED_H_
