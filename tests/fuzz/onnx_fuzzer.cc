// Hostile ONNX uploads, structure-aware: inputs are ModelProtos mutated by
// field (proto_mutator.h) plus the moves that reach past the format's checks
// (raw_data that fits its dims, node inputs naming real tensors, weight
// operators, Constant values and subgraphs). The target parses the upload as
// the server does and runs a job's reads, writes and serialization on it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "onnx/onnx_pb.h"
#include "google/protobuf/stubs/logging.h"
#include "server/formats/model.h"
#include "server/formats/onnx_model.h"
#include "tests/fuzz/model_roundtrip.h"
#include "tests/fuzz/proto_mutator.h"

namespace {

using bonsai::fuzz::ProtoMutator;

struct Parts {
  std::vector<onnx::GraphProto*> graphs;
  std::vector<onnx::TensorProto*> tensors;
  std::vector<onnx::NodeProto*> nodes;
  std::vector<std::string> names;
};

void Walk(onnx::GraphProto& graph, Parts& parts, int depth) {
  if (depth > 4) return;
  parts.graphs.push_back(&graph);
  for (auto& t : *graph.mutable_initializer()) {
    parts.tensors.push_back(&t);
    parts.names.push_back(t.name());
  }
  for (auto& node : *graph.mutable_node()) {
    parts.nodes.push_back(&node);
    for (const auto& output : node.output()) parts.names.push_back(output);
    for (auto& attribute : *node.mutable_attribute()) {
      if (attribute.has_t()) parts.tensors.push_back(attribute.mutable_t());
      if (attribute.has_g()) Walk(*attribute.mutable_g(), parts, depth + 1);
      for (auto& g : *attribute.mutable_graphs()) Walk(g, parts, depth + 1);
    }
  }
}

int Width(int32_t data_type) {
  switch (data_type) {
    case onnx::TensorProto::DOUBLE: case onnx::TensorProto::INT64: return 8;
    case onnx::TensorProto::FLOAT: case onnx::TensorProto::INT32: return 4;
    case onnx::TensorProto::FLOAT16: case onnx::TensorProto::BFLOAT16: return 2;
    default: return 1;
  }
}

template <typename T>
T& Pick(std::vector<T>& items, ProtoMutator& m) { return items[m.Below(items.size())]; }

void MutateOnnx(onnx::ModelProto& model, ProtoMutator& m) {
  Parts parts;
  Walk(*model.mutable_graph(), parts, 0);
  onnx::TensorProto* t = parts.tensors.empty() ? nullptr : Pick(parts.tensors, m);
  onnx::NodeProto* node = parts.nodes.empty() ? nullptr : Pick(parts.nodes, m);
  const std::string name = parts.names.empty() ? "w" : Pick(parts.names, m);
  static const char* kOps[] = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Constant",
                               "If", "Loop", "Scan", "Gather", "Relu"};
  static const int32_t kTypes[] = {onnx::TensorProto::FLOAT, onnx::TensorProto::FLOAT16,
                                   onnx::TensorProto::BFLOAT16, onnx::TensorProto::DOUBLE,
                                   onnx::TensorProto::INT64, onnx::TensorProto::UINT8};
  switch (m.Below(8)) {
    case 0: {  // raw_data that fits dims and dtype, so the storage check passes
      if (t == nullptr) break;
      uint64_t count = 1;
      for (int64_t d : t->dims()) {
        if (d < 0 || d > 1024) count = UINT64_MAX;
        if (count > 1024) break;
        count *= static_cast<uint64_t>(d);
      }
      if (count > 1024) break;
      t->clear_float_data(); t->clear_double_data(); t->clear_int32_data();
      std::string raw = t->raw_data();
      raw.resize(count * Width(t->data_type()), static_cast<char>(m.Below(256)));
      t->set_raw_data(raw);
      break;
    }
    case 1:  // a dimension: small, zero, or one more or fewer
      if (t == nullptr) break;
      if (t->dims_size() > 0 && m.OneIn(2)) {
        t->set_dims(m.Below(t->dims_size()), static_cast<int64_t>(m.Below(5)) - (m.OneIn(8) ? 5 : 0));
      } else if (t->dims_size() > 0 && m.OneIn(2)) {
        t->mutable_dims()->RemoveLast();
      } else {
        t->add_dims(static_cast<int64_t>(m.Below(4)));
      }
      break;
    case 2:
      if (t != nullptr) t->set_data_type(kTypes[m.Below(std::size(kTypes))]);
      break;
    case 3:
      if (node != nullptr) node->set_op_type(kOps[m.Below(std::size(kOps))]);
      break;
    case 4:  // a node input naming a tensor, at an existing or a new position
      if (node == nullptr) break;
      if (node->input_size() > 0 && m.OneIn(2)) {
        node->set_input(m.Below(node->input_size()), name);
      } else {
        node->add_input(name);
      }
      break;
    case 5:  // a tensor renamed after another (duplicates, shadowing)
      if (t != nullptr) t->set_name(name);
      break;
    case 6: {  // an attribute a weight operator or a control-flow node reads
      if (node == nullptr) break;
      onnx::AttributeProto* a = node->add_attribute();
      switch (m.Below(4)) {
        case 0: a->set_name(m.OneIn(2) ? "transB" : "group"); a->set_type(onnx::AttributeProto::INT);
                a->set_i(static_cast<int64_t>(m.Below(4))); break;
        case 1: a->set_name("value"); a->set_type(onnx::AttributeProto::TENSOR);
                if (t != nullptr) *a->mutable_t() = *t; break;
        default: {
          static const char* kGraphs[] = {"then_branch", "else_branch", "body"};
          a->set_name(kGraphs[m.Below(3)]); a->set_type(onnx::AttributeProto::GRAPH);
          onnx::GraphProto* g = a->mutable_g();
          g->set_name("sub");
          if (t != nullptr) *g->add_initializer() = *t;
          if (node != nullptr && m.OneIn(2)) *g->add_node() = *node;
        }
      }
      break;
    }
    default:  // typed storage instead of raw_data, or the other way round
      if (t == nullptr) break;
      if (t->has_raw_data()) {
        const size_t n = t->raw_data().size() / 4;
        t->clear_raw_data();
        for (size_t i = 0; i < n && i < 1024; ++i) t->add_float_data(static_cast<float>(i) - 2.0f);
      } else {
        *parts.graphs[0]->add_initializer() = *t;
      }
  }
}

}  // namespace

// Byte-mutated inputs would have protobuf log every invalid string it meets.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  static const std::vector<std::string> kDictionary = {
      "Conv", "ConvTranspose", "Gemm", "MatMul", "Constant", "If", "Loop", "Scan",
      "transB", "group", "value", "then_branch", "else_branch", "body", "W", "X", "Y"};
  return bonsai::fuzz::MutateProtoInput<onnx::ModelProto>(data, size, max_size, seed, kDictionary,
                                                          MutateOnnx);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto model = bonsai::formats::ParseModel(bytes);
  if (!model.ok()) return 0;
  // Writing back what was read must give the model's deterministic
  // serialization, byte for byte.
  std::string expected;
  const bool identity = size % 3 == 0;
  if (identity && (*model)->format() == bonsai::formats::Format::kOnnx) {
    auto proto = bonsai::formats::ParseOnnxProto(bytes);
    if (!proto.ok()) __builtin_trap();
    auto serialized = bonsai::formats::SerializeOnnxDeterministic(**proto);
    if (serialized.ok()) expected = *std::move(serialized);
  }
  bonsai::fuzz::RoundTrip(**model, identity, static_cast<unsigned>(size), size % 2 == 0,
                          expected.empty() ? nullptr : &expected);
  return 0;
}
