// Coupling analysis for channel pruning: which producers must lose the same
// channels, and which constant tensors lose them along which axis.
//
// Every Conv (group 1), Gemm or MatMul with a constant weight starts a group
// whose channels are followed forward through ops that treat channels one by
// one. An elementwise op whose inputs come from several groups joins them; a
// group whose channels reach anything else is left alone with the reason.
#ifndef BONSAI_SERVER_SURGERY_CHANNEL_GROUPS_H_
#define BONSAI_SERVER_SURGERY_CHANNEL_GROUPS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "server/formats/onnx_graph_index.h"

namespace bonsai::surgery {

// Inferred dims per tensor name; -1 where a dim is unknown.
using ShapeMap = absl::flat_hash_map<std::string, std::vector<int64_t>>;

enum class SiteRole { kProducer, kParameter, kConsumer };

// A constant tensor that loses the group's removed channels along `axis`.
struct Site {
  std::string tensor;
  int axis = 0;
  SiteRole role = SiteRole::kParameter;
};

struct ChannelGroup {
  std::vector<std::string> producer_weights;  // in graph order
  int64_t channels = 0;
  std::vector<Site> sites;                // the producers' weights come first
  std::vector<std::string> activations;   // tensors whose channel dim shrinks
  // Outputs of depthwise Convs the channels pass through: their `group`
  // attribute becomes the new channel count.
  std::vector<std::string> depthwise_outputs;
  std::string left_alone;                 // why it cannot be pruned; empty if it can
};

struct ChannelAnalysis {
  std::vector<ChannelGroup> groups;  // in the order of their first producer
  // Producers that do not start a group at all (grouped non-depthwise Conv, non-FLOAT
  // weight, shared weight), with the reason.
  std::vector<std::string> notes;
};

// Reads the graph, never changes it. `shapes` may be empty; ranks and sizes
// it knows let more ops be followed (Flatten after a global pool, a MatMul
// feeding a Conv).
ChannelAnalysis AnalyzeChannels(const formats::OnnxGraphIndex& index, const ShapeMap& shapes);

}  // namespace bonsai::surgery

#endif  // BONSAI_SERVER_SURGERY_CHANNEL_GROUPS_H_
