// Where an ONNX model keeps its weights and what uses them. Exporters put
// weights in graph initializers, in Constant nodes (attribute "value"), and
// inside the subgraphs of If/Loop/Scan; all three are found, recursively.
// Uses come from the graph index (onnx_graph_index.h).
#ifndef BONSAI_SERVER_FORMATS_ONNX_WEIGHTS_H_
#define BONSAI_SERVER_FORMATS_ONNX_WEIGHTS_H_

#include <string>
#include <vector>

#include "onnx/onnx_pb.h"
#include "server/formats/model.h"
#include "server/formats/onnx_graph_index.h"

namespace bonsai::formats {

struct OnnxTensorRef {
  std::string name;  // the initializer's name, or the Constant node's output
  onnx::TensorProto* proto = nullptr;
  onnx::GraphProto* graph = nullptr;  // the graph holding it
  bool is_initializer = false;        // false: a Constant node's value
};

// Every dense tensor of the graph and its subgraphs, in a fixed order: a
// graph's initializers, then its nodes' Constant values and subgraphs in
// node order.
std::vector<OnnxTensorRef> CollectOnnxTensors(onnx::GraphProto& graph);

// Fills role, layout and selected_by_default of `info` (name, shape, dtype
// already set) from the tensor's uses. The first weight use decides: a
// tensor feeding input 1 of Conv, ConvTranspose, Gemm or MatMul.
void ClassifyOnnxTensor(const OnnxGraphIndex& index, TensorInfo& info);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_WEIGHTS_H_
