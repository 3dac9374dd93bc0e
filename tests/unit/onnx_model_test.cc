#include "server/formats/in_memory.h"
#include "server/formats/onnx_model.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/formats/editable_graph.h"
#include "server/formats/model.h"
#include "tests/unit/formats_test_util.h"

namespace bonsai::formats {
namespace {

using ::testing::HasSubstr;
using test_util::AddIntAttribute;
using test_util::AddNode;
using test_util::EmptyModel;
using test_util::Iota;
using test_util::OnnxFloatTensor;
using test_util::Serialized;
using test_util::Storage;

std::unique_ptr<Model> Parse(const std::string& bytes) {
  auto model = ParseOnnx(bytes);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

const TensorInfo* Find(const Model& model, const std::string& name) {
  for (const TensorInfo& info : model.tensors()) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

// X -> Gemm(W_gemm, transB=1, b) -> MatMul(W_mm) -> Conv(W_conv) ->
// ConvTranspose(W_ct), with a Gather over an embedding and a
// LayerNormalization scale, plus an INT64 shape constant.
onnx::ModelProto LayeredModel(Storage storage = Storage::kRaw) {
  onnx::ModelProto model = EmptyModel();
  onnx::GraphProto* graph = model.mutable_graph();
  *graph->add_initializer() = OnnxFloatTensor("W_gemm", {3, 4}, Iota(12), storage);
  *graph->add_initializer() = OnnxFloatTensor("b_gemm", {3}, Iota(3), storage);
  *graph->add_initializer() = OnnxFloatTensor("W_mm", {3, 5}, Iota(15), storage);
  *graph->add_initializer() = OnnxFloatTensor("W_conv", {2, 1, 3, 3}, Iota(18), storage);
  *graph->add_initializer() = OnnxFloatTensor("W_ct", {2, 4, 1, 1}, Iota(8), storage);
  *graph->add_initializer() = OnnxFloatTensor("emb", {10, 4}, Iota(40), storage);
  *graph->add_initializer() = OnnxFloatTensor("ln_scale", {5}, Iota(5), storage);
  onnx::TensorProto shape;
  shape.set_name("shape");
  shape.set_data_type(onnx::TensorProto::INT64);
  shape.add_dims(2);
  shape.add_int64_data(1);
  shape.add_int64_data(-1);
  *graph->add_initializer() = shape;
  AddNode(graph, "Gather", {"emb", "ids"}, {"x"});
  AddIntAttribute(AddNode(graph, "Gemm", {"x", "W_gemm", "b_gemm"}, {"g"}), "transB", 1);
  AddNode(graph, "MatMul", {"g", "W_mm"}, {"m"});
  AddNode(graph, "LayerNormalization", {"m", "ln_scale"}, {"n"});
  AddNode(graph, "Reshape", {"n", "shape"}, {"r"});
  AddNode(graph, "Conv", {"r", "W_conv"}, {"c"});
  AddNode(graph, "ConvTranspose", {"c", "W_ct"}, {"y"});
  return model;
}

TEST(OnnxModelTest, WeightInputsAreSelectedWithTheirLayout) {
  auto model = Parse(Serialized(LayeredModel()));
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->format(), Format::kOnnx);
  ASSERT_EQ(model->tensors().size(), 8u);

  struct Expected { const char* name; const char* role; int output_axis, reduction_axis; };
  for (const Expected& e : {Expected{"W_gemm", "Gemm.B", 0, 1}, Expected{"W_mm", "MatMul.B", 1, 0},
                            Expected{"W_conv", "Conv.W", 0, 1},
                            Expected{"W_ct", "ConvTranspose.W", 1, 0}}) {
    const TensorInfo* info = Find(*model, e.name);
    ASSERT_NE(info, nullptr) << e.name;
    EXPECT_TRUE(info->selected_by_default) << e.name;
    EXPECT_EQ(info->role, e.role);
    ASSERT_TRUE(info->layout.has_value()) << e.name;
    EXPECT_EQ(info->layout->output_axis, e.output_axis) << e.name;
    EXPECT_EQ(info->layout->reduction_axis, e.reduction_axis) << e.name;
  }
  for (const char* name : {"b_gemm", "emb", "ln_scale", "shape"}) {
    EXPECT_FALSE(Find(*model, name)->selected_by_default) << name;
  }
  EXPECT_EQ(Find(*model, "b_gemm")->role, "Gemm.C");
  EXPECT_EQ(Find(*model, "emb")->role, "Gather.data");
  EXPECT_EQ(Find(*model, "shape")->dtype, tensor::DType::kOther);
}

TEST(OnnxModelTest, GemmWithoutTransBHasInputMajorLayout) {
  onnx::ModelProto proto = EmptyModel();
  *proto.mutable_graph()->add_initializer() = OnnxFloatTensor("W", {4, 3}, Iota(12));
  AddNode(proto.mutable_graph(), "Gemm", {"x", "W"}, {"y"});
  auto model = Parse(Serialized(proto));
  EXPECT_EQ(model->tensors()[0].layout->output_axis, 1);
  EXPECT_EQ(model->tensors()[0].layout->reduction_axis, 0);
}

TEST(OnnxModelTest, SharedWeightAppearsOnce) {
  onnx::ModelProto proto = EmptyModel();
  *proto.mutable_graph()->add_initializer() = OnnxFloatTensor("W", {4, 4}, Iota(16));
  AddNode(proto.mutable_graph(), "MatMul", {"x", "W"}, {"y"});
  AddNode(proto.mutable_graph(), "MatMul", {"y", "W"}, {"z"});
  auto model = Parse(Serialized(proto));
  ASSERT_EQ(model->tensors().size(), 1u);
  EXPECT_TRUE(model->tensors()[0].selected_by_default);
}

// The report's figures for an ONNX weight come from the default
// CompareWithStored: against the stored values, and only for a same-length
// change.
TEST(OnnxModelTest, CompareWithStoredDescribesTheChange) {
  onnx::ModelProto proto = EmptyModel();
  *proto.mutable_graph()->add_initializer() = OnnxFloatTensor("W", {2, 2}, {1, -2, 3, 0});
  AddNode(proto.mutable_graph(), "MatMul", {"x", "W"}, {"y"});
  auto model = Parse(Serialized(proto));
  const std::vector<float> after = {0, -2, 4, 0};
  auto change = model->CompareWithStored(0, after);
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_EQ(change->nonzero_before, 3u);
  EXPECT_EQ(change->nonzero_after, 2u);
  EXPECT_DOUBLE_EQ(change->norm2_before, 1 + 4 + 9);
  EXPECT_DOUBLE_EQ(change->diff2, 1 + 1);
  EXPECT_EQ(model->CompareWithStored(0, std::vector<float>(3)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

onnx::NodeProto* AddConstant(onnx::GraphProto* graph, const std::string& output,
                             onnx::TensorProto value) {
  onnx::NodeProto* node = AddNode(graph, "Constant", {}, {output});
  onnx::AttributeProto* attribute = node->add_attribute();
  attribute->set_name("value");
  attribute->set_type(onnx::AttributeProto::TENSOR);
  *attribute->mutable_t() = std::move(value);
  return node;
}

TEST(OnnxModelTest, ConstantNodeWeightsAreFound) {
  onnx::ModelProto proto = EmptyModel();
  AddConstant(proto.mutable_graph(), "W_const", OnnxFloatTensor("", {4, 2}, Iota(8)));
  AddNode(proto.mutable_graph(), "MatMul", {"x", "W_const"}, {"y"});
  auto model = Parse(Serialized(proto));
  ASSERT_EQ(model->tensors().size(), 1u);
  EXPECT_EQ(model->tensors()[0].name, "W_const");
  EXPECT_EQ(model->tensors()[0].role, "MatMul.B");
  EXPECT_TRUE(model->tensors()[0].selected_by_default);

  auto values = model->Read(0);
  ASSERT_TRUE(values.ok());
  values->values[0] = 0.0f;
  ASSERT_TRUE(model->Write(0, *values).ok());
  auto out = model->Serialize({});
  ASSERT_TRUE(out.ok());
  auto again = Parse(*out);
  EXPECT_EQ(again->Read(0)->values[0], 0.0f);
  EXPECT_EQ(again->Read(0)->values[1], 2.0f);
}

TEST(OnnxModelTest, WeightsInsideIfSubgraphsAreFound) {
  onnx::ModelProto proto = EmptyModel();
  onnx::NodeProto* branch = AddNode(proto.mutable_graph(), "If", {"cond"}, {"y"});
  onnx::AttributeProto* then_branch = branch->add_attribute();
  then_branch->set_name("then_branch");
  then_branch->set_type(onnx::AttributeProto::GRAPH);
  onnx::GraphProto* then_graph = then_branch->mutable_g();
  then_graph->set_name("then");
  *then_graph->add_initializer() = OnnxFloatTensor("W_then", {4, 4}, Iota(16));
  AddNode(then_graph, "MatMul", {"x", "W_then"}, {"t"});
  onnx::AttributeProto* else_branch = branch->add_attribute();
  else_branch->set_name("else_branch");
  else_branch->set_type(onnx::AttributeProto::GRAPH);
  onnx::GraphProto* else_graph = else_branch->mutable_g();
  else_graph->set_name("else");
  AddConstant(else_graph, "W_else", OnnxFloatTensor("", {2, 4, 1, 1}, Iota(8)));
  AddNode(else_graph, "Conv", {"x", "W_else"}, {"e"});

  auto model = Parse(Serialized(proto));
  ASSERT_EQ(model->tensors().size(), 2u);
  EXPECT_EQ(model->tensors()[0].name, "W_then");
  EXPECT_EQ(model->tensors()[0].role, "MatMul.B");
  EXPECT_TRUE(model->tensors()[0].selected_by_default);
  EXPECT_EQ(model->tensors()[1].name, "W_else");
  EXPECT_EQ(model->tensors()[1].role, "Conv.W");
  EXPECT_TRUE(model->tensors()[1].selected_by_default);
}

TEST(OnnxModelTest, ReadWriteSameValuesIsByteIdentical) {
  for (Storage storage : {Storage::kRaw, Storage::kTyped}) {
    const std::string original = Serialized(LayeredModel(storage));
    auto model = Parse(original);
    for (size_t i = 0; i < model->tensors().size(); ++i) {
      if (!tensor::IsFloating(model->tensors()[i].dtype)) continue;
      auto values = model->Read(i);
      ASSERT_TRUE(values.ok());
      ASSERT_TRUE(model->Write(i, *values).ok());
    }
    auto out = model->Serialize({});
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(*out, original);
  }
}

TEST(OnnxModelTest, WritesKeepTheStorageForm) {
  auto model = Parse(Serialized(LayeredModel(Storage::kTyped)));
  auto values = model->Read(0);  // W_gemm
  ASSERT_TRUE(values.ok());
  values->values[5] = 0.0f;
  ASSERT_TRUE(model->Write(0, *values).ok());
  auto out = model->Serialize({});
  ASSERT_TRUE(out.ok());
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(*out));
  const onnx::TensorProto& w = proto.graph().initializer(0);
  EXPECT_FALSE(w.has_raw_data());
  ASSERT_EQ(w.float_data_size(), 12);
  EXPECT_EQ(w.float_data(5), 0.0f);
  EXPECT_EQ(w.float_data(4), 5.0f);
}

TEST(OnnxModelTest, HalfAndDoubleTensorsKeepDTypeAndExactness) {
  onnx::ModelProto proto = EmptyModel();
  onnx::TensorProto half;
  half.set_name("H");
  half.set_data_type(onnx::TensorProto::FLOAT16);
  half.add_dims(2);
  half.add_dims(2);
  for (float v : {1.5f, -2.0f, 0.25f, 3.0f}) half.add_int32_data(tensor::FloatToHalf(v));
  *proto.mutable_graph()->add_initializer() = half;
  onnx::TensorProto dbl;
  dbl.set_name("D");
  dbl.set_data_type(onnx::TensorProto::DOUBLE);
  dbl.add_dims(1);
  dbl.add_dims(3);
  for (double v : {0.1, 1.0 / 3.0, 2.5}) dbl.add_double_data(v);
  *proto.mutable_graph()->add_initializer() = dbl;
  AddNode(proto.mutable_graph(), "MatMul", {"x", "H"}, {"y"});
  AddNode(proto.mutable_graph(), "MatMul", {"x", "D"}, {"z"});

  auto model = Parse(Serialized(proto));
  EXPECT_EQ(model->tensors()[0].dtype, tensor::DType::kF16);
  EXPECT_EQ(model->tensors()[1].dtype, tensor::DType::kF64);
  auto h = model->Read(0);
  EXPECT_EQ(h->values, (std::vector<float>{1.5f, -2.0f, 0.25f, 3.0f}));
  h->values[1] = 0.0f;
  ASSERT_TRUE(model->Write(0, *h).ok());
  auto d = model->Read(1);
  d->values[2] = 0.0f;
  ASSERT_TRUE(model->Write(1, *d).ok());
  auto out = model->Serialize({});
  onnx::ModelProto back;
  ASSERT_TRUE(back.ParseFromString(*out));
  EXPECT_EQ(back.graph().initializer(0).data_type(), onnx::TensorProto::FLOAT16);
  EXPECT_EQ(back.graph().initializer(0).int32_data(1), 0);
  EXPECT_EQ(back.graph().initializer(0).int32_data(2), tensor::FloatToHalf(0.25f));
  EXPECT_EQ(back.graph().initializer(1).double_data(0), 0.1);
  EXPECT_EQ(back.graph().initializer(1).double_data(1), 1.0 / 3.0);
  EXPECT_EQ(back.graph().initializer(1).double_data(2), 0.0);
}

TEST(OnnxModelTest, ExternalDataThatWasNotUploadedIsInvalidArgumentNamingIt) {
  onnx::ModelProto proto = EmptyModel();
  onnx::TensorProto* w = proto.mutable_graph()->add_initializer();
  w->set_name("W");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  onnx::StringStringEntryProto* location = w->add_external_data();
  location->set_key("location");
  location->set_value("weights.bin");
  auto model = ParseOnnx(Serialized(proto));
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("location \"weights.bin\" (weights.bin) was not uploaded with the model"));
}

TEST(OnnxModelTest, RawDataOfWrongLengthIsInvalidArgumentNamingTheTensor) {
  onnx::ModelProto proto = EmptyModel();
  onnx::TensorProto w = OnnxFloatTensor("W_bad", {4, 4}, Iota(16));
  w.mutable_raw_data()->resize(60);
  *proto.mutable_graph()->add_initializer() = w;
  auto model = ParseOnnx(Serialized(proto));
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("W_bad"));
}

TEST(OnnxModelTest, TypedDataOfWrongLengthIsInvalidArgument) {
  onnx::ModelProto proto = EmptyModel();
  *proto.mutable_graph()->add_initializer() = OnnxFloatTensor("W_short", {4, 4}, Iota(15), Storage::kTyped);
  EXPECT_THAT(std::string(ParseOnnx(Serialized(proto)).status().message()), HasSubstr("W_short"));
}

TEST(OnnxModelTest, NegativeDimensionIsInvalidArgument) {
  onnx::ModelProto proto = EmptyModel();
  *proto.mutable_graph()->add_initializer() = OnnxFloatTensor("W_neg", {-1, 4}, {});
  EXPECT_EQ(ParseOnnx(Serialized(proto)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OnnxModelTest, NotAModelProtoIsInvalidArgument) {
  EXPECT_EQ(ParseOnnx("\x0a\xff\xff\xff\xff\x0f garbage").status().code(),
            absl::StatusCode::kInvalidArgument);
  onnx::ModelProto no_graph;
  no_graph.set_ir_version(8);
  EXPECT_THAT(std::string(ParseOnnx(Serialized(no_graph)).status().message()), HasSubstr("no graph"));
}

TEST(OnnxModelTest, GraphEditsAreSeenByTheTensorsAfterwards) {
  auto parsed = ParseOnnxProto(Serialized(LayeredModel()));
  ASSERT_TRUE(parsed.ok());
  auto model = OnnxModel::Create(*std::move(parsed));
  ASSERT_TRUE(model.ok());
  EditableGraph* graph = (*model)->editable_graph();
  ASSERT_NE(graph, nullptr);
  ASSERT_TRUE(graph->Edit([](onnx::ModelProto& proto) {
                     onnx::TensorProto* w = proto.mutable_graph()->mutable_initializer(0);
                     w->set_dims(0, 2);
                     w->mutable_raw_data()->resize(2 * 4 * 4);
                     return absl::OkStatus();
                   }).ok());
  EXPECT_EQ((*model)->tensors()[0].shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ((*model)->Read(0)->values.size(), 8u);
}

TEST(OnnxModelTest, AFailedGraphEditReturnsItsStatus) {
  auto parsed = ParseOnnxProto(Serialized(LayeredModel()));
  ASSERT_TRUE(parsed.ok());
  auto model = OnnxModel::Create(*std::move(parsed));
  ASSERT_TRUE(model.ok());
  const absl::Status status = (*model)->editable_graph()->Edit(
      [](onnx::ModelProto&) { return absl::FailedPreconditionError("no"); });
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
}

// A tensor with a 0 dimension has empty raw_data (or no typed values) and
// reads into an empty vector, whose data() may be null: reading, comparing,
// writing and serializing it must copy nothing (memcpy with a null pointer
// is undefined even for zero bytes; UBSan reports it).
TEST(OnnxModelTest, ZeroElementTensorsReadCompareWriteAndSerialize) {
  for (Storage storage : {Storage::kRaw, Storage::kTyped}) {
    onnx::ModelProto proto = EmptyModel();
    onnx::GraphProto* graph = proto.mutable_graph();
    *graph->add_initializer() = OnnxFloatTensor("W", {0, 4}, {}, storage);
    onnx::TensorProto half = OnnxFloatTensor("H", {3, 0}, {}, storage);
    half.set_data_type(onnx::TensorProto::FLOAT16);
    *graph->add_initializer() = half;
    AddNode(graph, "MatMul", {"x", "W"}, {"y"});
    const std::string original = Serialized(proto);
    for (bool packed : {false, true}) {
      auto model = Parse(original);
      ASSERT_NE(model, nullptr);
      ASSERT_EQ(model->tensors().size(), 2u);
      for (size_t i = 0; i < 2; ++i) {
        tensor::FloatTensor values;  // fresh: its data() is null
        ASSERT_TRUE(model->ReadInto(i, values).ok());
        EXPECT_EQ(values.size(), 0u);
        auto change = model->CompareWithStored(i, values.span());
        ASSERT_TRUE(change.ok()) << change.status();
        ASSERT_TRUE(model->Write(i, values, {Packing::kSparseBitmask}).ok());
      }
      auto out = model->Serialize({.packed = packed});
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, original);
    }
  }
}

}  // namespace
}  // namespace bonsai::formats
