// Node attribute lookups with the operator's default, shared by everything
// that reads an ONNX graph (weight layouts here, channel surgery in
// server/surgery/).
#ifndef BONSAI_SERVER_FORMATS_ONNX_ATTRIBUTES_H_
#define BONSAI_SERVER_FORMATS_ONNX_ATTRIBUTES_H_

#include <cstdint>
#include <string>

#include "onnx/onnx_pb.h"

namespace bonsai::formats {

// The attribute's value, or `fallback` when the node does not set it.
int64_t OnnxIntAttribute(const onnx::NodeProto& node, const std::string& name, int64_t fallback);
float OnnxFloatAttribute(const onnx::NodeProto& node, const std::string& name, float fallback);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_ATTRIBUTES_H_
