#include "server/formats/onnx_attributes.h"

namespace bonsai::formats {

int64_t OnnxIntAttribute(const onnx::NodeProto& node, const std::string& name, int64_t fallback) {
  for (const onnx::AttributeProto& attribute : node.attribute()) {
    if (attribute.name() == name && attribute.has_i()) return attribute.i();
  }
  return fallback;
}

float OnnxFloatAttribute(const onnx::NodeProto& node, const std::string& name, float fallback) {
  for (const onnx::AttributeProto& attribute : node.attribute()) {
    if (attribute.name() == name && attribute.has_f()) return attribute.f();
  }
  return fallback;
}

}  // namespace bonsai::formats
