#include "server/formats/in_memory.h"
#include "server/formats/safetensors.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/formats/model.h"
#include "tests/unit/formats_test_util.h"

namespace bonsai::formats {
namespace {

using ::testing::HasSubstr;
using test_util::Bytes;
using test_util::SafetensorsBytes;

// embed [2,2] F32 @0..16, layer.weight [2,3] F32 @16..40, layer.bias [2] F32
// @40..48, ids [3] I64 @48..72.
std::string SmallModel() {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("layer.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[16,40]},)"
      R"("model.embed_tokens.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("layer.bias":{"dtype":"F32","shape":[2],"data_offsets":[40,48]},)"
      R"("ids":{"dtype":"I64","shape":[3],"data_offsets":[48,72]}})";
  std::string data = Bytes<float>({1, 2, 3, 4});
  data += Bytes<float>({1, -2, 3, -4, 5, -6});
  data += Bytes<float>({0.5f, -0.5f});
  data += Bytes<int64_t>({7, 8, 9});
  return SafetensorsBytes(header, data);
}

std::unique_ptr<Model> Parse(std::string bytes) {
  auto model = ParseSafetensors(std::move(bytes));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

absl::Status ParseStatus(const std::string& header, const std::string& data = "") {
  return ParseSafetensors(SafetensorsBytes(header, data)).status();
}

TEST(SafetensorsTest, ListsTensorsInDataOrderWithDefaultSelection) {
  auto model = Parse(SmallModel());
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->format(), Format::kSafetensors);
  const auto& tensors = model->tensors();
  ASSERT_EQ(tensors.size(), 4u);
  EXPECT_EQ(tensors[0].name, "model.embed_tokens.weight");
  EXPECT_FALSE(tensors[0].selected_by_default);  // embedding
  EXPECT_EQ(tensors[1].name, "layer.weight");
  EXPECT_TRUE(tensors[1].selected_by_default);
  ASSERT_TRUE(tensors[1].layout.has_value());
  EXPECT_EQ(tensors[1].layout->output_axis, 0);
  EXPECT_EQ(tensors[1].layout->reduction_axis, 1);
  EXPECT_EQ(tensors[1].params, 6u);
  EXPECT_EQ(tensors[2].name, "layer.bias");
  EXPECT_FALSE(tensors[2].selected_by_default);  // rank 1
  EXPECT_EQ(tensors[3].name, "ids");
  EXPECT_EQ(tensors[3].dtype, tensor::DType::kOther);
  EXPECT_FALSE(tensors[3].selected_by_default);
}

TEST(SafetensorsTest, EmbeddingRuleCoversCommonNames) {
  for (const char* name : {"transformer.wte.weight", "transformer.wpe.weight",
                           "tok_embeddings.weight", "bert.embeddings.word_embeddings.weight",
                           "lm_head.weight", "Model.EMBED.W"}) {
    EXPECT_TRUE(IsEmbeddingName(name)) << name;
  }
  EXPECT_FALSE(IsEmbeddingName("model.layers.0.mlp.down_proj.weight"));
}

TEST(SafetensorsTest, ReadWriteSameValuesIsByteIdentical) {
  const std::string original = SmallModel();
  auto model = Parse(original);
  ASSERT_NE(model, nullptr);
  for (size_t i = 0; i < 3; ++i) {
    auto values = model->Read(i);
    ASSERT_TRUE(values.ok());
    ASSERT_TRUE(model->Write(i, *values).ok());
  }
  auto out = model->Serialize({});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, original);
}

// The report's figures come from comparing with the stored bytes, not with
// a copy: they must equal a direct computation on the values.
TEST(SafetensorsTest, CompareWithStoredDescribesTheChange) {
  auto model = Parse(SmallModel());
  size_t index = 0;
  for (; index < model->tensors().size(); ++index)
    if (model->tensors()[index].name == "layer.weight") break;
  ASSERT_LT(index, model->tensors().size());
  const std::vector<float> after = {0, -2, 0, -4, 5, -7};  // two pruned, one moved
  auto change = model->CompareWithStored(index, after);
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_EQ(change->nonzero_before, 6u);
  EXPECT_EQ(change->nonzero_after, 4u);
  EXPECT_DOUBLE_EQ(change->norm2_before, 1 + 4 + 9 + 16 + 25 + 36);
  EXPECT_DOUBLE_EQ(change->diff2, 1 + 9 + 1);
  EXPECT_DOUBLE_EQ(change->relative_error(), std::sqrt(11.0 / 91.0));
  // Nothing was written: the stored tensor is the original.
  auto stored = model->Read(index);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->values, (std::vector<float>{1, -2, 3, -4, 5, -6}));
  EXPECT_FALSE(model->CompareWithStored(index, std::vector<float>(5)).ok());
}

TEST(SafetensorsTest, ZeroedValuesSurviveReparse) {
  auto model = Parse(SmallModel());
  auto values = model->Read(1);
  ASSERT_TRUE(values.ok());
  values->values[1] = 0.0f;
  values->values[4] = 0.0f;
  ASSERT_TRUE(model->Write(1, *values).ok());
  auto out = model->Serialize({});
  ASSERT_TRUE(out.ok());
  auto again = Parse(*std::move(out));
  auto reread = again->Read(1);
  ASSERT_TRUE(reread.ok());
  EXPECT_EQ(reread->values, (std::vector<float>{1, 0, 3, -4, 0, -6}));
  EXPECT_EQ(again->tensors()[3].params, 3u);
}

TEST(SafetensorsTest, NonFloatingTensorsAreKeptAndNotReadable) {
  auto model = Parse(SmallModel());
  EXPECT_EQ(model->Read(3).status().code(), absl::StatusCode::kInvalidArgument);
  auto out = model->Serialize({});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->substr(out->size() - 24), Bytes<int64_t>({7, 8, 9}));
}

TEST(SafetensorsTest, HalfPrecisionTensorsKeepTheirDType) {
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]}})";
  std::vector<uint16_t> half = {tensor::FloatToHalf(1.5f), tensor::FloatToHalf(-2.0f),
                                tensor::FloatToHalf(0.25f), tensor::FloatToHalf(3.0f)};
  std::vector<uint16_t> bf = {tensor::FloatToBFloat16(1.5f), tensor::FloatToBFloat16(-2.0f),
                              tensor::FloatToBFloat16(0.25f), tensor::FloatToBFloat16(3.0f)};
  const std::string original = SafetensorsBytes(header, Bytes(half) + Bytes(bf));
  auto model = Parse(original);
  ASSERT_EQ(model->tensors()[0].dtype, tensor::DType::kF16);
  ASSERT_EQ(model->tensors()[1].dtype, tensor::DType::kBF16);
  for (size_t i = 0; i < 2; ++i) {
    auto values = model->Read(i);
    ASSERT_TRUE(values.ok());
    EXPECT_EQ(values->values, (std::vector<float>{1.5f, -2.0f, 0.25f, 3.0f}));
    values->values[2] = 0.0f;
    ASSERT_TRUE(model->Write(i, *values).ok());
  }
  auto out = model->Serialize({});
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->size(), original.size());
  EXPECT_EQ(out->substr(0, 8 + header.size()), original.substr(0, 8 + header.size()));
  auto again = Parse(*std::move(out));
  EXPECT_EQ(again->tensors()[0].dtype, tensor::DType::kF16);
  EXPECT_EQ(again->Read(0)->values, (std::vector<float>{1.5f, -2.0f, 0.0f, 3.0f}));
  EXPECT_EQ(again->Read(1)->values, (std::vector<float>{1.5f, -2.0f, 0.0f, 3.0f}));
}

TEST(SafetensorsTest, UnchangedF64ValuesStayExact) {
  const std::string header = R"({"d":{"dtype":"F64","shape":[1,3],"data_offsets":[0,24]}})";
  const std::vector<double> doubles = {0.1, 1.0 / 3.0, 2.5};
  auto model = Parse(SafetensorsBytes(header, Bytes(doubles)));
  auto values = model->Read(0);
  ASSERT_TRUE(values.ok());
  values->values[2] = 0.0f;
  ASSERT_TRUE(model->Write(0, *values).ok());
  auto out = model->Serialize({});
  ASSERT_TRUE(out.ok());
  std::vector<double> stored(3);
  std::memcpy(stored.data(), out->data() + 8 + header.size(), 24);
  EXPECT_EQ(stored[0], 0.1);
  EXPECT_EQ(stored[1], 1.0 / 3.0);
  EXPECT_EQ(stored[2], 0.0);
}

TEST(SafetensorsTest, WriteWithAnotherShapeIsInvalidArgument) {
  auto model = Parse(SmallModel());
  tensor::FloatTensor wrong{{3, 2}, std::vector<float>(6, 0.0f)};
  EXPECT_EQ(model->Write(1, wrong).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, SecondSerializeIsFailedPrecondition) {
  auto model = Parse(SmallModel());
  ASSERT_TRUE(model->Serialize({}).ok());
  EXPECT_EQ(model->Serialize({}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(model->Read(1).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Physical channel pruning asks the model for its graph; safetensors has
// none, so the engine refuses that mode instead of casting to a format.
TEST(SafetensorsTest, HasNoGraphToEdit) {
  auto model = Parse(SmallModel());
  EXPECT_EQ(model->editable_graph(), nullptr);
}

// ------------------------------------------------------------ hostile input

void ExpectInvalid(const absl::Status& status, const std::string& fragment) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(fragment));
  EXPECT_THAT(std::string(status.message()), HasSubstr("safetensors.torch.save_file"));
}

TEST(SafetensorsTest, TruncatedSafetensorsIsInvalidArgument) {
  std::string bytes = SmallModel();
  ExpectInvalid(ParseSafetensors(bytes.substr(0, 20)).status(), "truncated");
  ExpectInvalid(ParseSafetensors(bytes.substr(0, bytes.size() - 1)).status(), "outside the data area");
  ExpectInvalid(ParseSafetensors("abc").status(), "shorter than the 8-byte header length");
}

TEST(SafetensorsTest, AbsurdHeaderLengthIsInvalidArgument) {
  std::string bytes(8, '\xff');
  bytes += "{}";
  ExpectInvalid(ParseSafetensors(bytes).status(), "above the limit");
}

TEST(SafetensorsTest, InvalidJsonIsInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32",)"), "not valid JSON");
  ExpectInvalid(ParseStatus(R"([1,2])"), "must be a JSON object");
}

TEST(SafetensorsTest, MissingOrIllTypedFieldsAreInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "1234"), "no \"dtype\"");
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":3,"shape":[1],"data_offsets":[0,4]}})", "1234"),
                "no \"dtype\"");
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", "1234"), "no \"shape\"");
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "1234"),
                "must be an array");
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "1234"),
                "not a non-negative integer");
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[1]}})", "1234"), "data_offsets");
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "1234"),
                "data_offsets");
  ExpectInvalid(ParseStatus(R"({"a":[1,2]})", "1234"), "must be an object");
  ExpectInvalid(ParseStatus(R"({"__metadata__":{"k":1}})"), "must be a string");
}

TEST(SafetensorsTest, NegativeDimensionIsInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,4]}})", "1234"),
                "negative dimension");
}

TEST(SafetensorsTest, OverflowingShapeIsInvalidArgument) {
  ExpectInvalid(
      ParseStatus(
          R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "1234"),
      "overflows");
  ExpectInvalid(
      ParseStatus(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}})",
                  "1234"),
      "overflows");
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[18446744073709551615],)"
                            R"("data_offsets":[0,4]}})",
                            "1234"),
                "not a non-negative integer");
}

TEST(SafetensorsTest, OffsetsOutsideDataAreaAreInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", "12345678"),
                "outside the data area");
  ExpectInvalid(
      ParseStatus(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551615,3]}})",
                  "1234"),
      "after end");
}

TEST(SafetensorsTest, BeginAfterEndIsInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "12345678"),
                "after end");
}

TEST(SafetensorsTest, OverlappingOffsetsAreInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            "123456789012"),
                "overlapping");
}

TEST(SafetensorsTest, ShapeNotMatchingSpanIsInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678"),
                "needs 12 bytes");
}

TEST(SafetensorsTest, UnknownDTypeIsInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})",
                            std::string(16, '\0')),
                "unknown dtype \"F128\"");
}

TEST(SafetensorsTest, DuplicateNamesAreInvalidArgument) {
  ExpectInvalid(ParseStatus(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            "12345678"),
                "appears twice");
}

TEST(SafetensorsTest, EmptyTensorsAndGapsAreAccepted) {
  auto model = ParseSafetensors(
      SafetensorsBytes(R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)"
                       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                       "12345678"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->tensors().size(), 2u);
  EXPECT_FALSE((*model)->tensors()[0].selected_by_default);  // nothing to prune
}

// A zero-element tensor has no bytes and reads into an empty vector, whose
// data() may be null: every path must treat it as nothing to copy (passing
// null to memcpy is undefined even for zero bytes; UBSan reports it).
TEST(SafetensorsTest, ZeroElementTensorsReadCompareWriteAndSerialize) {
  for (const char* dtype : {"F32", "F16", "BF16", "F64"}) {
    SCOPED_TRACE(dtype);
    const std::string file = SafetensorsBytes(
        std::string(R"({"a":{"dtype":")") + dtype + R"(","shape":[0],"data_offsets":[0,0]},)" +
            R"("b":{"dtype":")" + dtype + R"(","shape":[2,0,3],"data_offsets":[0,0]}})",
        "");
    for (bool packed : {false, true}) {
      auto model = Parse(file);
      ASSERT_NE(model, nullptr);
      ASSERT_EQ(model->tensors().size(), 2u);
      for (size_t i = 0; i < 2; ++i) {
        tensor::FloatTensor values;  // fresh: its data() is null
        ASSERT_TRUE(model->ReadInto(i, values).ok());
        EXPECT_EQ(values.size(), 0u);
        auto change = model->CompareWithStored(i, values.span());
        ASSERT_TRUE(change.ok()) << change.status();
        EXPECT_EQ(change->nonzero_before, 0u);
        ASSERT_TRUE(model->Write(i, values, {Packing::kSparseBitmask}).ok());
      }
      auto out = model->Serialize({.packed = packed});
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, file);
    }
  }
}

}  // namespace
}  // namespace bonsai::formats
