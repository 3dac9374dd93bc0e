#include "server/formats/onnx_channel_graph.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace bonsai::formats::channels {
namespace {

// Every input name read anywhere inside `graph`, subgraphs included. A body
// may read outer tensors without declaring them, so all its inputs count.
void CollectSubgraphInputs(const onnx::GraphProto& graph,
                           absl::flat_hash_map<std::string, int>& uses) {
  for (const onnx::NodeProto& node : graph.node()) {
    for (const std::string& input : node.input()) {
      if (!input.empty()) ++uses[input];
    }
    for (const onnx::AttributeProto& attribute : node.attribute()) {
      if (attribute.has_g()) CollectSubgraphInputs(attribute.g(), uses);
      for (const onnx::GraphProto& body : attribute.graphs()) CollectSubgraphInputs(body, uses);
    }
  }
}

}  // namespace

GraphIndex::GraphIndex(onnx::GraphProto& graph) : graph_(graph) {
  for (onnx::TensorProto& tensor : *graph.mutable_initializer()) {
    initializers_[tensor.name()] = &tensor;
  }
  for (onnx::NodeProto& node : *graph.mutable_node()) {
    for (const std::string& output : node.output()) {
      if (!output.empty()) producers_[output] = &node;
    }
    for (int i = 0; i < node.input_size(); ++i) {
      if (!node.input(i).empty()) consumers_[node.input(i)].push_back({&node, i});
    }
    if (node.op_type() == "Constant" && node.domain().empty() && node.output_size() == 1) {
      for (onnx::AttributeProto& attribute : *node.mutable_attribute()) {
        if (attribute.name() == "value" && attribute.has_t()) {
          constant_nodes_[node.output(0)] = attribute.mutable_t();
        }
      }
    }
    for (const onnx::AttributeProto& attribute : node.attribute()) {
      if (attribute.has_g()) CollectSubgraphInputs(attribute.g(), subgraph_uses_);
      for (const onnx::GraphProto& body : attribute.graphs()) {
        CollectSubgraphInputs(body, subgraph_uses_);
      }
    }
  }
  for (const onnx::ValueInfoProto& output : graph.output()) outputs_.insert(output.name());
}

onnx::TensorProto* GraphIndex::Constant(const std::string& name) const {
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

onnx::NodeProto* GraphIndex::Producer(const std::string& name) const {
  auto it = producers_.find(name);
  return it == producers_.end() ? nullptr : it->second;
}

const std::vector<Use>& GraphIndex::Consumers(const std::string& name) const {
  static const std::vector<Use> kNone;
  auto it = consumers_.find(name);
  return it == consumers_.end() ? kNone : it->second;
}

int GraphIndex::UseCount(const std::string& name) const {
  int count = static_cast<int>(Consumers(name).size());
  if (auto it = subgraph_uses_.find(name); it != subgraph_uses_.end()) count += it->second;
  return count;
}

bool GraphIndex::ConstantUsedOnce(const std::string& name) const {
  if (UseCount(name) != 1) return false;
  const onnx::NodeProto* node = Producer(name);
  if (node != nullptr && node->op_type() == "Identity" && node->input_size() == 1) {
    return ConstantUsedOnce(node->input(0));
  }
  return true;
}

int64_t IntAttribute(const onnx::NodeProto& node, const std::string& name, int64_t fallback) {
  for (const onnx::AttributeProto& attribute : node.attribute()) {
    if (attribute.name() == name) return attribute.i();
  }
  return fallback;
}

float FloatAttribute(const onnx::NodeProto& node, const std::string& name, float fallback) {
  for (const onnx::AttributeProto& attribute : node.attribute()) {
    if (attribute.name() == name) return attribute.f();
  }
  return fallback;
}

uint64_t ElementCount(const onnx::TensorProto& tensor) {
  uint64_t count = 1;
  for (int64_t dim : tensor.dims()) count *= dim < 0 ? 0 : static_cast<uint64_t>(dim);
  return count;
}

absl::Status CheckFloatReadable(const onnx::TensorProto& tensor) {
  if (tensor.data_type() != onnx::TensorProto::FLOAT) {
    return absl::UnimplementedError(absl::StrCat(
        "'", tensor.name(), "' is not FLOAT (data_type ", tensor.data_type(), ")"));
  }
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
    return absl::UnimplementedError(
        absl::StrCat("'", tensor.name(), "' keeps its data in an external file"));
  }
  const uint64_t count = ElementCount(tensor);
  const bool raw_ok = tensor.has_raw_data() && tensor.raw_data().size() == count * sizeof(float);
  const bool float_ok = !tensor.has_raw_data() &&
                        static_cast<uint64_t>(tensor.float_data_size()) == count;
  if (!raw_ok && !float_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", tensor.name(), "' holds a different number of values than its dims say"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> ReadFloats(const onnx::TensorProto& tensor) {
  if (absl::Status status = CheckFloatReadable(tensor); !status.ok()) return status;
  std::vector<float> values(ElementCount(tensor));
  if (tensor.has_raw_data()) {
    // ONNX stores raw data little-endian, as is every host we build for.
    std::memcpy(values.data(), tensor.raw_data().data(), values.size() * sizeof(float));
  } else {
    std::copy(tensor.float_data().begin(), tensor.float_data().end(), values.begin());
  }
  return values;
}

absl::Status KeepIndices(onnx::TensorProto& tensor, int axis, const std::vector<int64_t>& keep) {
  if (axis < 0 || axis >= tensor.dims_size()) {
    return absl::InternalError(absl::StrCat("axis ", axis, " out of range for '", tensor.name(), "'"));
  }
  absl::StatusOr<std::vector<float>> values = ReadFloats(tensor);
  if (!values.ok()) return values.status();
  uint64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= tensor.dims(d);
  for (int d = axis + 1; d < tensor.dims_size(); ++d) inner *= tensor.dims(d);
  const uint64_t extent = tensor.dims(axis);
  std::vector<float> kept;
  kept.reserve(outer * keep.size() * inner);
  for (uint64_t o = 0; o < outer; ++o) {
    const float* block = values->data() + o * extent * inner;
    for (int64_t index : keep) {
      kept.insert(kept.end(), block + index * inner, block + (index + 1) * inner);
    }
  }
  tensor.set_dims(axis, static_cast<int64_t>(keep.size()));
  if (tensor.has_raw_data()) {
    tensor.set_raw_data(kept.data(), kept.size() * sizeof(float));
  } else {
    tensor.mutable_float_data()->Assign(kept.begin(), kept.end());
  }
  return absl::OkStatus();
}

}  // namespace bonsai::formats::channels
