#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/formats/in_memory.h"
#include "server/formats/onnx_model.h"
#include "tests/unit/formats_test_util.h"
#include "tests/unit/packing_samples.h"

namespace bonsai::formats {
namespace {

using test_util::AddNode;
using test_util::EmptyModel;
using test_util::Noise;
using test_util::OnnxFloatTensor;
using test_util::Serialized;
using test_util::Storage;

// MatMul weights in the main graph (raw_data and float_data), one in an If
// branch, one in a Constant node, and a half-sparse bias.
onnx::ModelProto SparseCandidates() {
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

std::string Compress(bool packed, std::vector<StoredSize>* sizes = nullptr,
                     std::vector<std::string>* names = nullptr) {
  auto model = ParseOnnx(Serialized(SparseCandidates()));
  EXPECT_TRUE(model.ok()) << model.status();
  for (size_t i = 0; i < (*model)->tensors().size(); ++i) {
    auto values = (*model)->Read(i);
    if (!values.ok()) continue;
    // 90% sparse weights; the bias only half.
    const size_t keep = (*model)->tensors()[i].name == "bias" ? 2 : 10;
    const PackingHint hint = test_util::Sparsify(*values, keep);
    EXPECT_TRUE((*model)->Write(i, *values, hint).ok());
    if (names) names->push_back((*model)->tensors()[i].name);
  }
  auto out = (*model)->Serialize({packed});
  EXPECT_TRUE(out.ok()) << out.status();
  if (sizes) *sizes = (*model)->stored_sizes();
  return *out;
}

TEST(OnnxPackingTest, SparseInitializersReplaceDenseOnesWhereSmaller) {
  onnx::ModelProto packed;
  ASSERT_TRUE(packed.ParseFromString(Compress(true)));
  const onnx::GraphProto& graph = packed.graph();
  ASSERT_EQ(graph.sparse_initializer_size(), 2);
  EXPECT_EQ(graph.sparse_initializer(0).values().name(), "W_raw");
  EXPECT_EQ(graph.sparse_initializer(1).values().name(), "W_typed");
  ASSERT_EQ(graph.initializer_size(), 2);  // bias (not smaller) and cond stay dense
  EXPECT_EQ(graph.initializer(0).name(), "bias");
  EXPECT_EQ(graph.initializer(1).name(), "cond");
  const onnx::SparseTensorProto& sparse = graph.sparse_initializer(0);
  EXPECT_EQ(sparse.dims_size(), 2);
  EXPECT_EQ(sparse.values().dims(0), 26);  // ceil(256 / 10)
  EXPECT_EQ(sparse.indices().data_type(), onnx::TensorProto::INT64);
  EXPECT_EQ(sparse.indices().dims_size(), 1);
  int64_t second;
  std::memcpy(&second, sparse.indices().raw_data().data() + 8, 8);
  EXPECT_EQ(second, 10);
  // Constant nodes stay dense; subgraph initializers become sparse in place.
  EXPECT_EQ(graph.node(3).attribute(0).t().raw_data().size(), 256u * 4u);
  const onnx::GraphProto& then_graph = graph.node(5).attribute(0).g();
  EXPECT_EQ(then_graph.initializer_size(), 0);
  EXPECT_EQ(then_graph.sparse_initializer_size(), 1);
}

TEST(OnnxPackingTest, StoredSizesReportSparseBytes) {
  std::vector<StoredSize> sizes;
  std::vector<std::string> names;
  Compress(true, &sizes, &names);
  ASSERT_EQ(sizes.size(), 7u);  // 4 initializers, 1 Constant, 2 branch initializers
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "W_raw") {
      EXPECT_EQ(sizes[i].dense_bytes, 1024u);
      EXPECT_EQ(sizes[i].stored_bytes, 26u * 12u);
    }
    if (names[i] == "bias" || names[i] == "W_const") {
      EXPECT_EQ(sizes[i].stored_bytes, sizes[i].dense_bytes);
    }
  }
}

TEST(OnnxPackingTest, PackedModelStillParses) {
  auto model = ParseOnnx(Compress(true));
  ASSERT_TRUE(model.ok()) << model.status();
}

TEST(OnnxPackingTest, DenseOutputHasNoSparseInitializers) {
  onnx::ModelProto dense;
  ASSERT_TRUE(dense.ParseFromString(Compress(false)));
  EXPECT_EQ(dense.graph().sparse_initializer_size(), 0);
  EXPECT_EQ(dense.graph().initializer_size(), 4);
}

// With BONSAI_PACKING_SAMPLES=<dir>: outputs for tests/e2e/test_packing_format.py.
TEST(OnnxPackingTest, WritesSamplesForThePythonReader) {
  if (!test_util::WriteSample("sample.dense.onnx", Compress(false))) {
    GTEST_SKIP() << "BONSAI_PACKING_SAMPLES is not set";
  }
  test_util::WriteSample("sample.packed.onnx", Compress(true));
}

}  // namespace
}  // namespace bonsai::formats
