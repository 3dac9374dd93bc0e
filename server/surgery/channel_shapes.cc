#include "server/surgery/channel_shapes.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "onnx/shape_inference/implementation.h"
#include "server/formats/onnx_tensor_data.h"

namespace bonsai::surgery {
namespace {

// Initializers at most this large keep their values in the copy: enough for
// every shape, axes or pads constant, far below any weight worth pruning.
constexpr uint64_t kKeptValues = 64;

void AddShapes(const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& infos,
               ShapeMap& shapes) {
  for (const onnx::ValueInfoProto& info : infos) {
    if (!info.type().has_tensor_type() || !info.type().tensor_type().has_shape()) continue;
    std::vector<int64_t>& dims = shapes[info.name()];
    dims.clear();
    for (const auto& dim : info.type().tensor_type().shape().dim()) {
      dims.push_back(dim.has_dim_value() ? dim.dim_value() : -1);
    }
  }
}

}  // namespace

absl::StatusOr<ShapeMap> InferShapesWithoutWeights(const onnx::ModelProto& model) {
  onnx::ModelProto copy;
  copy.set_ir_version(model.ir_version());
  *copy.mutable_opset_import() = model.opset_import();
  *copy.mutable_functions() = model.functions();
  const onnx::GraphProto& source = model.graph();
  onnx::GraphProto& graph = *copy.mutable_graph();
  graph.set_name(source.name());
  *graph.mutable_node() = source.node();
  *graph.mutable_input() = source.input();
  *graph.mutable_output() = source.output();
  *graph.mutable_value_info() = source.value_info();
  for (const onnx::TensorProto& tensor : source.initializer()) {
    onnx::TensorProto* stub = graph.add_initializer();
    if (formats::OnnxElementCount(tensor) <= kKeptValues) {
      *stub = tensor;
      continue;
    }
    stub->set_name(tensor.name());
    stub->set_data_type(tensor.data_type());
    *stub->mutable_dims() = tensor.dims();
  }
  try {
    onnx::shape_inference::InferShapes(copy);
  } catch (const std::exception& e) {
    // ONNX reports through exceptions; they stop here.
    return absl::InvalidArgumentError(absl::StrCat("ONNX shape inference failed: ", e.what()));
  }
  ShapeMap shapes;
  AddShapes(graph.input(), shapes);
  AddShapes(graph.value_info(), shapes);
  AddShapes(graph.output(), shapes);
  return shapes;
}

MacCount CountMacs(const formats::OnnxGraphIndex& index, const ShapeMap& shapes) {
  MacCount count;
  for (const onnx::NodeProto& node : index.graph().node()) {
    const std::string& op = node.op_type();
    if ((op != "Conv" && op != "Gemm" && op != "MatMul") || node.input_size() < 2 ||
        node.output_size() < 1) {
      continue;
    }
    const onnx::TensorProto* weight = index.Constant(node.input(1));
    if (weight == nullptr) continue;
    const uint64_t weight_macs = formats::OnnxElementCount(*weight);
    if (op != "Conv") {
      if (weight->dims_size() == 2) count.macs += weight_macs;
      continue;
    }
    uint64_t positions = 1;
    auto it = shapes.find(node.output(0));
    if (it == shapes.end() || it->second.size() < 3) {
      count.per_position = true;
    } else {
      for (size_t d = 2; d < it->second.size(); ++d) {
        if (it->second[d] < 0) {
          count.per_position = true;
          positions = 1;
          break;
        }
        positions *= static_cast<uint64_t>(it->second[d]);
      }
    }
    count.macs += weight_macs * positions;
  }
  return count;
}

}  // namespace bonsai::surgery
