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

std::string Compress(bool packed, std::vector<StoredSize>* sizes = nullptr,
                     std::vector<std::string>* names = nullptr) {
  auto out = test_util::CompressOnnxSample(packed, sizes, names);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : std::string();
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

}  // namespace
}  // namespace bonsai::formats
