#include "server/formats/onnx_output_heads.h"

#include "server/formats/onnx_attributes.h"

namespace bonsai::formats {
namespace {

// The constant weight of a layer that makes new channels from its input's
// (Conv, ConvTranspose, Gemm, MatMul with a constant B), or null.
const onnx::TensorProto* LayerWeight(const OnnxGraphIndex& index, const onnx::NodeProto& node) {
  if (!IsDefaultOnnxDomain(node) || node.input_size() < 2 || node.output_size() < 1) return nullptr;
  const std::string& op = node.op_type();
  if (op != "Conv" && op != "ConvTranspose" && op != "Gemm" && op != "MatMul") return nullptr;
  return index.Constant(node.input(1));
}

}  // namespace

absl::flat_hash_map<std::string, std::string> WeightsReachingGraphOutputs(
    const OnnxGraphIndex& index) {
  // One pass from the last node to the first (ONNX keeps nodes in
  // topological order): a value reaches the output it is, or one that a
  // consumer's output reaches, unless that consumer is a weight layer reading
  // it as data, which mixes the channels into new ones. Linear in the graph,
  // whatever its shape. A graph out of order only finds fewer heads.
  absl::flat_hash_map<std::string, std::string> reaches;
  const auto& nodes = index.graph().node();
  for (int n = nodes.size() - 1; n >= 0; --n) {
    for (const std::string& name : nodes[n].output()) {
      if (name.empty() || reaches.contains(name)) continue;
      std::string reached = index.IsGraphOutput(name) ? name : "";
      for (const OnnxUse& use : index.Consumers(name)) {
        if (!reached.empty()) break;
        if (use.input == 0 && LayerWeight(index, *use.node) != nullptr) continue;
        for (const std::string& out : use.node->output()) {
          auto it = reaches.find(out);
          if (it != reaches.end() && !it->second.empty()) {
            reached = it->second;
            break;
          }
        }
      }
      reaches.emplace(name, std::move(reached));
    }
  }
  absl::flat_hash_map<std::string, std::string> heads;
  for (const onnx::NodeProto& node : nodes) {
    const onnx::TensorProto* weight = LayerWeight(index, node);
    if (weight == nullptr) continue;
    for (const std::string& name : node.output()) {
      auto it = reaches.find(name);
      if (it == reaches.end() || it->second.empty()) continue;
      heads.try_emplace(weight->name().empty() ? node.input(1) : weight->name(), it->second);
      break;
    }
  }
  return heads;
}

}  // namespace bonsai::formats
