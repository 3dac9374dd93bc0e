#include "server/formats/model_set.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/formats/in_memory.h"
#include "tests/unit/formats_test_util.h"

namespace bonsai::formats {
namespace {

using ::testing::HasSubstr;
using test_util::SafetensorsFile;

std::vector<InputFile> Files(const std::vector<std::pair<std::string, std::string>>& named) {
  std::vector<InputFile> files;
  for (size_t i = 0; i < named.size(); ++i) {
    auto file = InMemoryFile(named[i].first, named[i].second, i);
    EXPECT_TRUE(file.ok());
    files.push_back(*std::move(file));
  }
  return files;
}

std::string Shard(const std::string& tensor, float scale) {
  return SafetensorsFile({{tensor, "F32", {2, 2}, {1 * scale, -2 * scale, 3 * scale, 0}}});
}

const char* kIndex = R"({"metadata":{"total_size":32},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}})";

TEST(ModelSetTest, ShardsAreOneModelInNameOrderAndOtherFilesComeBackUnchanged) {
  auto model = OpenModelFiles(Files({{"config.json", "{\"x\":1}"},
                                     {"model-00002-of-00002.safetensors", Shard("b.weight", 2)},
                                     {"model.safetensors.index.json", kIndex},
                                     {"model-00001-of-00002.safetensors", Shard("a.weight", 1)}}));
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->tensors().size(), 2u);
  EXPECT_EQ((*model)->tensors()[0].name, "a.weight");
  EXPECT_EQ((*model)->tensors()[0].file, "model-00001-of-00002.safetensors");
  EXPECT_EQ((*model)->tensors()[1].file, "model-00002-of-00002.safetensors");
  MemorySink sink;
  ASSERT_TRUE((*model)->StartOutput({}, sink).ok());
  ASSERT_TRUE((*model)->FinishOutput().ok());
  EXPECT_EQ(sink.files()[0], "{\"x\":1}");
  EXPECT_EQ(sink.files()[2], kIndex) << "a dense output leaves the index as it came";
  EXPECT_EQ(sink.files()[3], Shard("a.weight", 1));
}

TEST(ModelSetTest, AShardTheIndexNamesButWasNotUploadedIsInvalidArgument) {
  auto model = OpenModelFiles(Files({{"model.safetensors.index.json", kIndex},
                                     {"model-00001-of-00002.safetensors", Shard("a.weight", 1)}}));
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("model-00002-of-00002.safetensors, which was not uploaded"));
}

TEST(ModelSetTest, ATensorInAnotherShardThanTheIndexSaysIsInvalidArgument) {
  auto model = OpenModelFiles(Files({{"model.safetensors.index.json", kIndex},
                                     {"model-00001-of-00002.safetensors", Shard("b.weight", 1)},
                                     {"model-00002-of-00002.safetensors", Shard("a.weight", 2)}}));
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("but model.safetensors.index.json puts it in"));
}

TEST(ModelSetTest, ATensorInTwoShardsIsInvalidArgument) {
  auto model = OpenModelFiles(Files({{"a.safetensors", Shard("w", 1)}, {"b.safetensors", Shard("w", 2)}}));
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("is in both a.safetensors and b.safetensors"));
}

TEST(ModelSetTest, FilesWithoutAModelAreInvalidArgument) {
  auto model = OpenModelFiles(Files({{"config.json", "{}"}, {"tokenizer.json", "{}"}}));
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("is a model"));
}

TEST(ModelSetTest, PathsThatLeaveTheFolderAreNotSafe) {
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b"}) {
    EXPECT_FALSE(IsSafeRelativePath(bad)) << bad;
  }
  for (const char* good : {"model.safetensors", "sub/dir/w.bin", "a..b"}) {
    EXPECT_TRUE(IsSafeRelativePath(good)) << good;
  }
}

}  // namespace
}  // namespace bonsai::formats
