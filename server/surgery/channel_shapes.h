// Shapes and compute cost around channel pruning: ONNX shape inference run
// on a copy that leaves the weights' values behind, and the multiply-
// accumulate count of the layers pruning shrinks.
#ifndef BONSAI_SERVER_SURGERY_CHANNEL_SHAPES_H_
#define BONSAI_SERVER_SURGERY_CHANNEL_SHAPES_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "server/formats/onnx_graph_index.h"
#include "server/surgery/channel_groups.h"

namespace bonsai::surgery {

// Inferred dims of every tensor whose shape ONNX can work out. The copy keeps
// only small initializers' values (shape constants for Reshape and the like),
// so inference costs little memory whatever the model's size. Errors are the
// inference's own complaint, as InvalidArgument.
absl::StatusOr<ShapeMap> InferShapesWithoutWeights(const onnx::ModelProto& model);

struct MacCount {
  uint64_t macs = 0;
  bool per_position = false;  // some Conv output size was unknown: counted once
};

// Conv: out * in/group * kernel * output positions; Gemm and MatMul with a
// constant weight: in * out per row. Weights' current dims, so it counts the
// graph as it is; `shapes` gives Conv output sizes, which pruning keeps.
MacCount CountMacs(const formats::OnnxGraphIndex& index, const ShapeMap& shapes);

}  // namespace bonsai::surgery

#endif  // BONSAI_SERVER_SURGERY_CHANNEL_SHAPES_H_
