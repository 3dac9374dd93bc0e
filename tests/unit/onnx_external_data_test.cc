#include "server/formats/onnx_external_data.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/formats/in_memory.h"
#include "server/formats/model_set.h"
#include "tests/unit/formats_test_util.h"

namespace bonsai::formats {
namespace {

using ::testing::HasSubstr;
using namespace test_util;

// x @ W with W [4, 2] stored in "w.bin" at `offset` (after 8 bytes of padding).
std::string ModelWithExternalWeight(const std::string& location, const std::string& offset,
                                    const std::string& length) {
  onnx::ModelProto model = EmptyModel();
  onnx::GraphProto* graph = model.mutable_graph();
  onnx::TensorProto* w = graph->add_initializer();
  w->set_name("W");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->add_dims(2);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  for (auto [key, value] : {std::pair{"location", location}, {"offset", offset}, {"length", length}}) {
    if (value.empty()) continue;
    auto* entry = w->add_external_data();
    entry->set_key(key);
    entry->set_value(value);
  }
  AddNode(graph, "MatMul", {"x", "W"}, {"y"});
  return Serialized(model);
}

std::string DataFile() { return std::string(8, 'p') + Bytes(Iota(8)) + std::string(4, 'q'); }

absl::StatusOr<std::unique_ptr<Model>> Open(const std::string& onnx, const std::string& data_name) {
  std::vector<InputFile> files;
  files.push_back(*InMemoryFile("m/model.onnx", onnx, 0));
  files.push_back(*InMemoryFile(data_name, DataFile(), 1));
  return OpenModelFiles(std::move(files));
}

TEST(OnnxExternalDataTest, TensorsAreReadFromTheDataFileAndWrittenBackInPlace) {
  auto model = Open(ModelWithExternalWeight("w.bin", "8", "32"), "m/w.bin");
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->tensors().size(), 1u);
  EXPECT_EQ((*model)->tensors()[0].file, "m/w.bin");
  auto values = (*model)->Read(0);
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(values->values, Iota(8));
  MemorySink sink;
  ASSERT_TRUE((*model)->StartOutput({}, sink).ok());
  values->values[0] = 0;
  ASSERT_TRUE((*model)->Write(0, *values).ok());
  ASSERT_TRUE((*model)->FinishOutput().ok());
  std::vector<float> expected = Iota(8);
  expected[0] = 0;
  EXPECT_EQ(sink.files()[1], std::string(8, 'p') + Bytes(expected) + std::string(4, 'q'))
      << "same layout, new values at the same offset";
  EXPECT_EQ(sink.files()[0], ModelWithExternalWeight("w.bin", "8", "32"))
      << "the graph, and so every location, is unchanged";
}

TEST(OnnxExternalDataTest, HostileLocationsAreInvalidArgument) {
  struct Case {
    std::string location, offset, length, message;
  };
  for (const Case& c : std::vector<Case>{
           {"/etc/passwd", "0", "32", "is absolute or leaves the model's folder"},
           {"../w.bin", "0", "32", "is absolute or leaves the model's folder"},
           {"other.bin", "0", "32", "was not uploaded with the model"},
           {"w.bin", "40", "32", "is past the end"},
           {"w.bin", "8", "64", "is past the end"},
           {"w.bin", "-1", "32", "is not a non-negative integer"},
           {"w.bin", "8", "16", "its shape and dtype need 32"},
           {"", "8", "32", "names no location"}}) {
    auto model = Open(ModelWithExternalWeight(c.location, c.offset, c.length), "m/w.bin");
    ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << c.location;
    EXPECT_THAT(std::string(model.status().message()), HasSubstr(c.message)) << c.location;
  }
}

}  // namespace
}  // namespace bonsai::formats
