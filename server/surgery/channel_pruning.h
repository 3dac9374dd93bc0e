// Structured pruning that physically shrinks an ONNX graph: whole output
// channels (Conv filters, Gemm/MatMul neurons) are removed from their
// producers, from everything that carries them channel by channel (biases,
// BatchNormalization, activations, pooling, per-channel constants, depthwise
// convolutions, Flatten after a global pool) and from the matching input
// channels of every consumer.
//
// Channels that meet at a residual Add (or any elementwise op with two
// non-constant inputs) must keep the same indices on both sides, so their
// producers form one group and share one choice, scored by the sum of the
// producers' per-channel norms (methods::ChannelNorms). A group whose
// channels reach something this pass does not follow channel by channel
// (Concat, Reshape, a graph output, a grouped but not depthwise convolution,
// an unknown op), or that would cut a non-FLOAT, external or shared tensor,
// is left whole with a note that says why: the graph is never broken to
// reach a target.
//
// What the result computes: exactly the original model with the removed
// channels' input weights zeroed in every consumer (the cuts marked
// `input_channels` below).
// That is the honest reference. Zeroing only the producers' weights ("mask"
// mode) is not the same model when a removed channel still emits a constant
// (a bias, BatchNormalization's shift, Sigmoid(0) = 0.5) that the consumers
// would have seen.
#ifndef BONSAI_SERVER_SURGERY_CHANNEL_PRUNING_H_
#define BONSAI_SERVER_SURGERY_CHANNEL_PRUNING_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "server/methods/method_config.h"

namespace bonsai::surgery {

struct ChannelPruningOptions {
  // Share of each group's channels to remove: exactly round(fraction * C)
  // (half to even, as tensor::PruneCount), but one channel is always kept.
  double fraction = 0.0;
  // Channels are scored by methods/structured.h's norms, the ones mask mode
  // ranks by, so both modes remove the same channels of a lone layer.
  methods::NormKind norm = methods::NormKind::kL2;
  // Producer weights (Conv W, Gemm B, MatMul B) that may be pruned; a group
  // is pruned only when all its producers are selected. Empty: all.
  std::function<bool(const std::string& weight_name)> selected;
};

// One tensor cut along one axis.
struct ChannelCut {
  int axis = 0;
  // The channels a consumer reads (Conv W axis 1, Gemm/MatMul B rows), as
  // opposed to channels a producer or parameter emits. Zeroing the input
  // cuts in the original model gives the reference the result equals.
  bool input_channels = false;
  std::vector<int64_t> removed;  // indices in the tensor before the cut, ascending
};

// A constant tensor (weight, bias, normalization parameter) that lost rows.
struct PrunedTensor {
  std::string name;
  // "producer", "consumer" or "parameter" (bias, BatchNormalization, ...).
  std::string role;
  std::vector<int64_t> shape_before, shape_after;
  std::vector<ChannelCut> cuts;
};

// Producers that shared one channel choice.
struct PrunedGroup {
  std::vector<std::string> producer_weights;
  int64_t channels_before = 0, channels_after = 0;
  std::vector<int64_t> removed;  // ascending
};

struct ChannelPruningResult {
  std::vector<PrunedGroup> groups;
  std::vector<PrunedTensor> tensors;
  // Elements of all initializers (every dtype), before and after.
  uint64_t params_before = 0, params_after = 0;
  // Multiply-accumulates of Conv, Gemm and MatMul with constant weights, for
  // one sample: Conv counts out * in/group * kernel * output positions, Gemm
  // and MatMul count in * out per row. When a Conv's output size is not known
  // from shape inference it counts one position, and `macs_per_position` says
  // so.
  uint64_t macs_before = 0, macs_after = 0;
  bool macs_per_position = false;
  // Groups left alone and why, and anything else a reader should know.
  std::vector<std::string> notes;
};

// Prunes `model` in place. The graph is analysed and every group validated
// before the first tensor changes, so an InvalidArgument (a fraction outside
// [0, 1]) leaves the model untouched; an Internal error while cutting would be
// a bug here and may leave it half cut. Afterwards, value_info of the tensors
// that lost channels is removed so shape inference recomputes it.
absl::StatusOr<ChannelPruningResult> PruneChannelsPhysically(
    onnx::ModelProto& model, const ChannelPruningOptions& options);

}  // namespace bonsai::surgery

#endif  // BONSAI_SERVER_SURGERY_CHANNEL_PRUNING_H_
