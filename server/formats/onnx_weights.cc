#include "server/formats/onnx_weights.h"

#include "absl/strings/str_cat.h"
#include "onnx/defs/schema.h"
#include "server/formats/onnx_attributes.h"

namespace bonsai::formats {
namespace {

void CollectFromGraph(onnx::GraphProto& graph, std::vector<OnnxTensorRef>& out) {
  for (onnx::TensorProto& tensor : *graph.mutable_initializer()) {
    out.push_back({tensor.name(), &tensor, &graph, true});
  }
  for (onnx::NodeProto& node : *graph.mutable_node()) {
    const bool constant = node.op_type() == "Constant" && IsDefaultOnnxDomain(node);
    for (onnx::AttributeProto& attribute : *node.mutable_attribute()) {
      if (constant && attribute.name() == "value" && attribute.has_t()) {
        const std::string name =
            node.output_size() > 0 ? node.output(0) : attribute.t().name();
        out.push_back({name, attribute.mutable_t(), &graph, false});
      }
      if (attribute.has_g()) CollectFromGraph(*attribute.mutable_g(), out);
      for (onnx::GraphProto& subgraph : *attribute.mutable_graphs()) {
        CollectFromGraph(subgraph, out);
      }
    }
  }
}

// "Conv.B", "Gather.data", ...: the input's name in the operator schema, or
// its index when the operator is unknown to this ONNX version.
std::string RoleOf(const OnnxUse& use) {
  const onnx::NodeProto& node = *use.node;
  std::string input = absl::StrCat("input", use.input);
  const std::string domain = IsDefaultOnnxDomain(node) ? "" : node.domain();
  if (const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(node.op_type(), domain)) {
    const auto& inputs = schema->inputs();
    if (use.input < static_cast<int>(inputs.size())) {
      input = inputs[use.input].GetName();
    } else if (!inputs.empty() &&
               inputs.back().GetOption() == onnx::OpSchema::FormalParameterOption::Variadic) {
      input = inputs.back().GetName();
    }
  }
  return absl::StrCat(node.op_type(), ".", input);
}

// The layout of a weight input per the table in model.h.
std::optional<WeightLayout> WeightLayoutOf(const OnnxUse& use, size_t rank) {
  const onnx::NodeProto& node = *use.node;
  if (use.input != 1 || !IsDefaultOnnxDomain(node) || rank < 2) return std::nullopt;
  const std::string& op = node.op_type();
  if (op == "Conv") return WeightLayout{0, 1};
  if (op == "ConvTranspose") return WeightLayout{1, 0};
  if (op == "Gemm") {
    return OnnxIntAttribute(node, "transB", 0) != 0 ? WeightLayout{0, 1} : WeightLayout{1, 0};
  }
  if (op == "MatMul") {  // batched B is [..., in, out]
    const int r = static_cast<int>(rank);
    return WeightLayout{r - 1, r - 2};
  }
  return std::nullopt;
}

}  // namespace

std::vector<OnnxTensorRef> CollectOnnxTensors(onnx::GraphProto& graph) {
  std::vector<OnnxTensorRef> out;
  CollectFromGraph(graph, out);
  return out;
}

void ClassifyOnnxTensor(const OnnxGraphIndex& index, TensorInfo& info) {
  const std::vector<OnnxUse>& uses = index.Uses(info.name);
  if (uses.empty()) return;
  const bool weight_like = tensor::IsFloating(info.dtype) && info.params > 0;
  for (const OnnxUse& use : uses) {
    if (!weight_like) break;
    if (auto layout = WeightLayoutOf(use, info.shape.size())) {
      info.role = RoleOf(use);
      info.layout = layout;
      info.selected_by_default = true;
      return;
    }
  }
  info.role = RoleOf(uses.front());
}

}  // namespace bonsai::formats
