// Which weights make a model's outputs (classes, vocabulary): removing one
// of their output channels removes an output, so both structured modes leave
// them whole unless a rule names them. Read from the graph index.
#ifndef BONSAI_SERVER_FORMATS_ONNX_OUTPUT_HEADS_H_
#define BONSAI_SERVER_FORMATS_ONNX_OUTPUT_HEADS_H_

#include <string>

#include "absl/container/flat_hash_map.h"
#include "server/formats/onnx_graph_index.h"

namespace bonsai::formats {

// Weights of Conv, ConvTranspose, Gemm and MatMul whose output channels
// reach a graph output with no other such weight layer on the way (any other
// op may lie between: Softmax, Reshape, Add, ...), each with the output it
// reaches.
absl::flat_hash_map<std::string, std::string> WeightsReachingGraphOutputs(
    const OnnxGraphIndex& index);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_OUTPUT_HEADS_H_
