// Node lookups shared by everything that reads an ONNX graph (weight
// layouts and output heads here, channel surgery in server/surgery/):
// attributes with the operator's default, and the default operator domain.
#ifndef BONSAI_SERVER_FORMATS_ONNX_ATTRIBUTES_H_
#define BONSAI_SERVER_FORMATS_ONNX_ATTRIBUTES_H_

#include <cstdint>
#include <string>

#include "onnx/onnx_pb.h"

namespace bonsai::formats {

// The node is a standard ONNX operator ("" and "ai.onnx" name the same
// domain), as opposed to a vendor's (com.microsoft, ...).
inline bool IsDefaultOnnxDomain(const onnx::NodeProto& node) {
  return node.domain().empty() || node.domain() == "ai.onnx";
}

// The attribute's value, or `fallback` when the node does not set it.
int64_t OnnxIntAttribute(const onnx::NodeProto& node, const std::string& name, int64_t fallback);
float OnnxFloatAttribute(const onnx::NodeProto& node, const std::string& name, float fallback);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_ATTRIBUTES_H_
