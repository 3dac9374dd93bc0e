// Builders for the formats tests: safetensors files from a JSON header and
// raw data, and ONNX models through the ModelProto API (no files needed).
#ifndef BONSAI_TESTS_UNIT_FORMATS_TEST_UTIL_H_
#define BONSAI_TESTS_UNIT_FORMATS_TEST_UTIL_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "onnx/onnx_pb.h"
#include "server/tensor/dtype.h"

namespace bonsai::formats::test_util {

inline std::string SafetensorsBytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return out + header + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A safetensors file from float values stored in each tensor's dtype, laid
// out without gaps in the order given.
struct SafetensorsTensor {
  std::string name;
  std::string dtype;  // F32 F16 BF16 F64
  std::vector<int64_t> shape;
  std::vector<float> values;
};

inline std::string SafetensorsFile(const std::vector<SafetensorsTensor>& tensors,
                                   const std::string& metadata_json = "") {
  std::string header = "{";
  if (!metadata_json.empty()) header += "\"__metadata__\":" + metadata_json + ",";
  std::string data;
  for (const SafetensorsTensor& t : tensors) {
    const tensor::DType dtype = t.dtype == "F32"    ? tensor::DType::kF32
                                : t.dtype == "F16"  ? tensor::DType::kF16
                                : t.dtype == "BF16" ? tensor::DType::kBF16
                                                    : tensor::DType::kF64;
    std::string bytes(t.values.size() * tensor::DTypeSize(dtype), '\0');
    (void)tensor::EncodeFromFloat(dtype, t.values, bytes.data());
    std::string shape;
    for (int64_t d : t.shape) shape += (shape.empty() ? "" : ",") + std::to_string(d);
    if (header.size() > 1 && header.back() != ',') header += ",";
    header += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[" + shape +
              "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + bytes.size()) + "]}";
    data += bytes;
  }
  if (header.back() == ',') header.pop_back();
  header += "}";
  return SafetensorsBytes(header, data);
}

enum class Storage { kRaw, kTyped };

inline onnx::TensorProto OnnxFloatTensor(const std::string& name, const std::vector<int64_t>& dims,
                                     const std::vector<float>& values,
                                     Storage storage = Storage::kRaw) {
  onnx::TensorProto tensor;
  tensor.set_name(name);
  tensor.set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) tensor.add_dims(d);
  if (storage == Storage::kRaw) {
    tensor.set_raw_data(Bytes(values));
  } else {
    for (float v : values) tensor.add_float_data(v);
  }
  return tensor;
}

inline std::vector<float> Iota(size_t n, float start = 1.0f) {
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = start + static_cast<float>(i);
  return values;
}

inline onnx::NodeProto* AddNode(onnx::GraphProto* graph, const std::string& op,
                                const std::vector<std::string>& inputs,
                                const std::vector<std::string>& outputs) {
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type(op);
  for (const auto& input : inputs) node->add_input(input);
  for (const auto& output : outputs) node->add_output(output);
  return node;
}

inline void AddIntAttribute(onnx::NodeProto* node, const std::string& name, int64_t value) {
  onnx::AttributeProto* attribute = node->add_attribute();
  attribute->set_name(name);
  attribute->set_type(onnx::AttributeProto::INT);
  attribute->set_i(value);
}

inline onnx::ModelProto EmptyModel() {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("bonsai-test");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  model.mutable_graph()->set_name("g");
  return model;
}

inline std::string Serialized(const onnx::ModelProto& model) {
  std::string out;
  model.SerializeToString(&out);
  return out;
}

}  // namespace bonsai::formats::test_util

#endif  // BONSAI_TESTS_UNIT_FORMATS_TEST_UTIL_H_
