#include "server/formats/in_memory.h"
#include "server/formats/model.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/formats_test_util.h"

namespace bonsai::formats {
namespace {

using ::testing::HasSubstr;
using test_util::AddNode;
using test_util::Bytes;
using test_util::EmptyModel;
using test_util::Iota;
using test_util::OnnxFloatTensor;
using test_util::SafetensorsBytes;
using test_util::Serialized;

void ExpectInvalid(const absl::StatusOr<std::unique_ptr<Model>>& model, const std::string& fragment) {
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_THAT(std::string(model.status().message()), HasSubstr(fragment));
}

TEST(ParseModelTest, DetectsSafetensorsByContent) {
  auto model = ParseModel(SafetensorsBytes(
      R"({"w":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}})", Bytes<float>({1, 2})));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->format(), Format::kSafetensors);
  EXPECT_EQ(FormatName((*model)->format()), "safetensors");
}

TEST(ParseModelTest, DetectsOnnxByContent) {
  onnx::ModelProto proto = EmptyModel();
  *proto.mutable_graph()->add_initializer() = OnnxFloatTensor("W", {2, 2}, Iota(4));
  AddNode(proto.mutable_graph(), "MatMul", {"x", "W"}, {"y"});
  auto model = ParseModel(Serialized(proto));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->format(), Format::kOnnx);
  EXPECT_EQ(FormatName((*model)->format()), "onnx");
}

TEST(ParseModelTest, OnnxWithABraceAtOffsetEightIsStillOnnx) {
  onnx::ModelProto proto = EmptyModel();
  proto.set_producer_name("abcd{xyz");  // bytes 0-3: ir_version, tag, length
  *proto.mutable_graph()->add_initializer() = OnnxFloatTensor("W", {2, 2}, Iota(4));
  const std::string bytes = Serialized(proto);
  ASSERT_EQ(bytes[8], '{');
  auto model = ParseModel(bytes);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->format(), Format::kOnnx);
}

TEST(ParseModelTest, TruncatedSafetensorsReportsTheSafetensorsProblem) {
  std::string bytes = SafetensorsBytes(
      R"({"w":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}})", Bytes<float>({1, 2}));
  ExpectInvalid(ParseModel(bytes.substr(0, 30)), "truncated");
}

TEST(ParseModelTest, PickleIsRefusedAsPyTorchCheckpoint) {
  ExpectInvalid(ParseModel(std::string("\x80\x02}q\x00.", 6)), "PyTorch checkpoint");
  ExpectInvalid(ParseModel(std::string("\x80\x05\x95", 3)), "safetensors.torch.save_file");
}

TEST(ParseModelTest, ZipIsRefusedAsPyTorchCheckpoint) {
  ExpectInvalid(ParseModel(std::string("PK\x03\x04\x00\x00archive/data.pkl", 22)),
                "bonsai does not unpickle uploads");
}

TEST(ParseModelTest, EmptyUploadListsSupportedFormats) {
  ExpectInvalid(ParseModel(""), "empty");
  ExpectInvalid(ParseModel(""), "safetensors");
}

TEST(ParseModelTest, UnknownBytesListSupportedFormats) {
  ExpectInvalid(ParseModel("hello, this is not a model"), "bonsai accepts ONNX models");
  ExpectInvalid(ParseModel(std::string(100, '\xff')), "safetensors files");
}

}  // namespace
}  // namespace bonsai::formats

namespace bonsai::formats {
namespace {

// A header of 640 bytes begins 0x80 0x02, as a pickle does: still safetensors.
TEST(ParseModelTest, SafetensorsWhoseHeaderLengthLooksLikeAPickleIsSafetensors) {
  std::string header = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  header.append(640 - header.size(), ' ');
  std::string file(8, '\0');
  file[0] = static_cast<char>(0x80);
  file[1] = 0x02;
  file += header + std::string(4, '\0');
  auto model = ParseModel(file);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->format(), Format::kSafetensors);
}

}  // namespace
}  // namespace bonsai::formats
