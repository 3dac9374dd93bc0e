// Compressed-looking models for the packing tests and for
// bonsai-packing-samples (write_packing_samples.cc): each tensor's values are
// changed the way a method would (magnitude, 2:4, binary, ternary) and
// written back with that method's PackingHint.
#ifndef BONSAI_TESTS_UNIT_PACKING_SAMPLES_H_
#define BONSAI_TESTS_UNIT_PACKING_SAMPLES_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/formats/in_memory.h"
#include "server/formats/model.h"
#include "tests/unit/formats_test_util.h"

namespace bonsai::formats::test_util {

inline std::vector<float> Noise(size_t n, uint32_t seed) {
  std::vector<float> values(n);
  for (float& v : values) {
    seed = seed * 1664525u + 1013904223u;
    v = static_cast<float>(static_cast<int32_t>(seed >> 8) - (1 << 23)) / (1 << 23);
    if (v == 0.0f) v = 0.5f;
  }
  return values;
}

// Keeps every `keep`-th element.
inline PackingHint Sparsify(tensor::FloatTensor& t, size_t keep) {
  for (size_t i = 0; i < t.size(); ++i) {
    if (i % keep != 0) t.values[i] = 0.0f;
  }
  return {Packing::kSparseBitmask};
}

// 2:4 along axis 1 (the reduction axis of the PyTorch layout); a tail of
// fewer than 4 is left alone.
inline PackingHint TwoFour(tensor::FloatTensor& t) {
  const int64_t outer = t.shape[0], length = t.shape[1];
  int64_t inner = 1;
  for (size_t d = 2; d < t.shape.size(); ++d) inner *= t.shape[d];
  for (int64_t a = 0; a < outer; ++a) {
    for (int64_t b = 0; b < inner; ++b) {
      for (int64_t g = 0; g + 4 <= length; g += 4) {
        std::vector<int64_t> index;
        for (int64_t k = g; k < g + 4; ++k) index.push_back((a * length + k) * inner + b);
        std::sort(index.begin(), index.end(), [&](int64_t x, int64_t y) {
          return std::fabs(t.values[x]) < std::fabs(t.values[y]);
        });
        t.values[index[0]] = t.values[index[1]] = 0.0f;
      }
    }
  }
  return {Packing::kNM, 2, 4, {}};
}

// One scale per row (output channel 0); ternary zeroes small magnitudes.
inline PackingHint Signs(tensor::FloatTensor& t, bool ternary) {
  const size_t cols = t.size() / t.shape[0];
  PackingHint hint{ternary ? Packing::kTernary : Packing::kBinary};
  for (int64_t r = 0; r < t.shape[0]; ++r) {
    double sum = 0.0;
    for (size_t c = 0; c < cols; ++c) sum += std::fabs(t.values[r * cols + c]);
    const float alpha = static_cast<float>(sum / cols);
    for (size_t c = 0; c < cols; ++c) {
      float& v = t.values[r * cols + c];
      v = ternary && std::fabs(v) < 0.5f * alpha ? 0.0f : std::copysign(alpha, v);
    }
    hint.scales.push_back(alpha);
  }
  return hint;
}

inline std::string SampleSafetensors() {
  return SafetensorsFile(
      {{"sparse.weight", "F32", {8, 16}, Noise(128, 1)},
       {"sparse_bf16.weight", "BF16", {8, 16}, Noise(128, 2)},
       {"nm.weight", "F16", {3, 10}, Noise(30, 3)},
       {"nm3d.weight", "F32", {2, 8, 3}, Noise(48, 4)},
       {"binary.weight", "F32", {4, 8}, Noise(32, 5)},
       {"ternary.weight", "F64", {4, 8}, Noise(32, 6)},
       {"barely_sparse.weight", "F32", {8, 8}, Noise(64, 7)},
       {"norm.weight", "F32", {8}, Noise(8, 8)}},
      R"({"format":"pt"})");
}

// Compresses the sample as methods would; tensor indices follow data order.
inline void CompressSample(Model& model) {
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    const std::string& name = model.tensors()[i].name;
    auto values = model.Read(i);
    if (!values.ok()) continue;
    PackingHint hint;
    if (name == "sparse.weight") hint = Sparsify(*values, 4);
    if (name == "sparse_bf16.weight") {
      hint = Sparsify(*values, 4);
      values->values[0] = -0.0f;  // must survive packing bit for bit
    }
    if (name == "nm.weight" || name == "nm3d.weight") hint = TwoFour(*values);
    if (name == "binary.weight") hint = Signs(*values, false);
    if (name == "ternary.weight") hint = Signs(*values, true);
    if (name == "barely_sparse.weight") {
      values->values[3] = values->values[9] = 0.0f;  // 8 + 62 * 4 bytes: not smaller
      hint = {Packing::kSparseBitmask};
    }
    if (name == "norm.weight") continue;
    (void)model.Write(i, *values, hint);
  }
}

// MatMul weights in the main graph (raw_data and float_data), one in an If
// branch, one in a Constant node, and a half-sparse bias.
inline onnx::ModelProto SparseCandidates() {
  onnx::ModelProto model = EmptyModel();
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("main");
  auto* x = graph->add_input()->mutable_type()->mutable_tensor_type();
  graph->mutable_input(0)->set_name("x");
  x->set_elem_type(onnx::TensorProto::FLOAT);
  x->mutable_shape()->add_dim()->set_dim_value(1);
  x->mutable_shape()->add_dim()->set_dim_value(16);
  *graph->add_initializer() = OnnxFloatTensor("W_raw", {16, 16}, Noise(256, 1));
  *graph->add_initializer() = OnnxFloatTensor("W_typed", {16, 16}, Noise(256, 2), Storage::kTyped);
  *graph->add_initializer() = OnnxFloatTensor("bias", {16}, Noise(16, 3));
  onnx::TensorProto* cond = graph->add_initializer();
  cond->set_name("cond");
  cond->set_data_type(onnx::TensorProto::BOOL);
  cond->add_int32_data(1);
  AddNode(graph, "MatMul", {"x", "W_raw"}, {"a"});
  AddNode(graph, "MatMul", {"a", "W_typed"}, {"b"});
  AddNode(graph, "Add", {"b", "bias"}, {"c"});
  onnx::NodeProto* constant = AddNode(graph, "Constant", {}, {"W_const"});
  onnx::AttributeProto* value = constant->add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  *value->mutable_t() = OnnxFloatTensor("W_const", {16, 16}, Noise(256, 4));
  AddNode(graph, "MatMul", {"c", "W_const"}, {"d"});

  onnx::NodeProto* branch = AddNode(graph, "If", {"cond"}, {"y"});
  for (const char* name : {"then_branch", "else_branch"}) {
    onnx::AttributeProto* attribute = branch->add_attribute();
    attribute->set_name(name);
    attribute->set_type(onnx::AttributeProto::GRAPH);
    onnx::GraphProto* sub = attribute->mutable_g();
    sub->set_name(name);
    const std::string w = std::string("W_") + name;
    *sub->add_initializer() = OnnxFloatTensor(w, {16, 16}, Noise(256, 5));
    AddNode(sub, "MatMul", {"d", w}, {std::string("out_") + name});
    onnx::ValueInfoProto* out = sub->add_output();
    out->set_name(std::string("out_") + name);
    auto* type = out->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    type->mutable_shape()->add_dim()->set_dim_value(1);
    type->mutable_shape()->add_dim()->set_dim_value(16);
  }
  onnx::ValueInfoProto* y = graph->add_output();
  y->set_name("y");
  auto* type = y->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
  type->mutable_shape()->add_dim()->set_dim_value(1);
  type->mutable_shape()->add_dim()->set_dim_value(16);
  return model;
}

// The ONNX sample with its weights 90% and its bias 50% zeroed, serialized
// dense or packed; `sizes` and `names` get the stored sizes and tensor names.
inline absl::StatusOr<std::string> CompressOnnxSample(bool packed,
                                                      std::vector<StoredSize>* sizes = nullptr,
                                                      std::vector<std::string>* names = nullptr) {
  auto model = ParseOnnx(Serialized(SparseCandidates()));
  if (!model.ok()) return model.status();
  for (size_t i = 0; i < (*model)->tensors().size(); ++i) {
    auto values = (*model)->Read(i);
    if (!values.ok()) continue;
    const size_t keep = (*model)->tensors()[i].name == "bias" ? 2 : 10;
    const PackingHint hint = Sparsify(*values, keep);
    if (auto status = (*model)->Write(i, *values, hint); !status.ok()) return status;
    if (names) names->push_back((*model)->tensors()[i].name);
  }
  auto out = (*model)->Serialize({packed});
  if (sizes) *sizes = (*model)->stored_sizes();
  return out;
}

struct Outputs {
  std::string dense, packed;
  std::vector<std::string> names;
  std::vector<StoredSize> sizes;
};

// The safetensors `input` compressed by CompressSample, serialized dense and
// packed.
inline absl::StatusOr<Outputs> CompressSafetensorsBothWays(const std::string& input) {
  Outputs out;
  for (bool packed : {false, true}) {
    auto model = ParseSafetensors(input);
    if (!model.ok()) return model.status();
    CompressSample(**model);
    auto bytes = (*model)->Serialize({packed});
    if (!bytes.ok()) return bytes.status();
    (packed ? out.packed : out.dense) = *bytes;
    if (packed) {
      out.sizes = (*model)->stored_sizes();
      for (const auto& info : (*model)->tensors()) out.names.push_back(info.name);
    }
  }
  return out;
}

}  // namespace bonsai::formats::test_util

#endif  // BONSAI_TESTS_UNIT_PACKING_SAMPLES_H_
