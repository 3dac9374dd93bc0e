#include "server/formats/onnx_graph_index.h"

namespace bonsai::formats {

OnnxGraphIndex::OnnxGraphIndex(onnx::GraphProto& graph) : graph_(graph) {
  for (onnx::TensorProto& tensor : *graph.mutable_initializer()) {
    initializers_[tensor.name()] = &tensor;
  }
  for (onnx::NodeProto& node : *graph.mutable_node()) {
    for (const std::string& output : node.output()) {
      if (!output.empty()) producers_[output] = &node;
    }
    for (int i = 0; i < node.input_size(); ++i) {
      if (node.input(i).empty()) continue;
      consumers_[node.input(i)].push_back({&node, i});
      uses_[node.input(i)].push_back({&node, i});
    }
    if (node.op_type() == "Constant" && node.domain().empty() && node.output_size() == 1) {
      for (onnx::AttributeProto& attribute : *node.mutable_attribute()) {
        if (attribute.name() == "value" && attribute.has_t()) {
          constant_nodes_[node.output(0)] = attribute.mutable_t();
        }
      }
    }
    IndexBodies(node);
  }
  for (const onnx::ValueInfoProto& output : graph.output()) outputs_.insert(output.name());
}

// A body may read outer tensors without declaring them, so all its inputs
// count as uses.
void OnnxGraphIndex::IndexSubgraph(onnx::GraphProto& body) {
  for (onnx::NodeProto& node : *body.mutable_node()) {
    for (int i = 0; i < node.input_size(); ++i) {
      if (!node.input(i).empty()) uses_[node.input(i)].push_back({&node, i});
    }
    IndexBodies(node);
  }
}

void OnnxGraphIndex::IndexBodies(onnx::NodeProto& node) {
  for (onnx::AttributeProto& attribute : *node.mutable_attribute()) {
    if (attribute.has_g()) IndexSubgraph(*attribute.mutable_g());
    for (onnx::GraphProto& body : *attribute.mutable_graphs()) IndexSubgraph(body);
  }
}

onnx::TensorProto* OnnxGraphIndex::Constant(const std::string& name) const {
  // An initializer that is also a graph input (all of them, for IR < 4
  // exporters) is still treated as a constant: its input's shape is cut with
  // it, and a caller feeding it must then feed the pruned shape.
  if (auto it = initializers_.find(name); it != initializers_.end()) return it->second;
  if (auto it = constant_nodes_.find(name); it != constant_nodes_.end()) return it->second;
  // Exporters sometimes read a weight through Identity (torch does for
  // parameters it also aliases); the value is still the initializer's.
  if (const onnx::NodeProto* node = Producer(name);
      node != nullptr && node->op_type() == "Identity" && node->domain().empty() &&
      node->input_size() == 1) {
    return Constant(node->input(0));
  }
  return nullptr;
}

onnx::NodeProto* OnnxGraphIndex::Producer(const std::string& name) const {
  auto it = producers_.find(name);
  return it == producers_.end() ? nullptr : it->second;
}

const std::vector<OnnxUse>& OnnxGraphIndex::Consumers(const std::string& name) const {
  static const std::vector<OnnxUse> kNone;
  auto it = consumers_.find(name);
  return it == consumers_.end() ? kNone : it->second;
}

const std::vector<OnnxUse>& OnnxGraphIndex::Uses(const std::string& name) const {
  static const std::vector<OnnxUse> kNone;
  auto it = uses_.find(name);
  return it == uses_.end() ? kNone : it->second;
}

bool OnnxGraphIndex::ConstantUsedOnce(const std::string& name) const {
  if (UseCount(name) != 1) return false;
  const onnx::NodeProto* node = Producer(name);
  if (node != nullptr && node->op_type() == "Identity" && node->input_size() == 1) {
    return ConstantUsedOnce(node->input(0));
  }
  return true;
}

}  // namespace bonsai::formats
