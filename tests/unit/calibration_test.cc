#include "server/engine/calibration.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bonsai::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A minimal safetensors writer: tensors in order, raw little-endian bytes.
class SafetensorsBuilder {
 public:
  SafetensorsBuilder& Add(const std::string& name, const std::string& dtype,
                          std::vector<int64_t> shape, const void* bytes, size_t size) {
    entries_.push_back(absl::StrCat("\"", name, "\":{\"dtype\":\"", dtype, "\",\"shape\":[",
                                    absl::StrJoin(shape, ","), "],\"data_offsets\":[",
                                    data_.size(), ",", data_.size() + size, "]}"));
    data_.append(static_cast<const char*>(bytes), size);
    return *this;
  }
  SafetensorsBuilder& F32(const std::string& name, std::vector<int64_t> shape,
                          const std::vector<float>& values) {
    return Add(name, "F32", std::move(shape), values.data(), values.size() * sizeof(float));
  }
  SafetensorsBuilder& Metadata(const std::string& key, const std::string& value) {
    metadata_.push_back(absl::StrCat("\"", key, "\":\"", value, "\""));
    return *this;
  }
  std::string Build() const {
    std::vector<std::string> items = entries_;
    if (!metadata_.empty()) {
      items.push_back(absl::StrCat("\"__metadata__\":{", absl::StrJoin(metadata_, ","), "}"));
    }
    std::string header = absl::StrCat("{", absl::StrJoin(items, ","), "}");
    while (header.size() % 8 != 0) header.push_back(' ');
    std::string file(8, '\0');
    uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((length >> (8 * i)) & 0xff);
    return file + header + data_;
  }

 private:
  std::vector<std::string> entries_, metadata_;
  std::string data_;
};

TEST(CalibrationTest, ActivationsBecomeTheirGramMatrixWithTheRowCount) {
  // X = [[1, 2], [3, 4], [0, 1]]: X^T X = [[10, 14], [14, 21]].
  const std::string file =
      SafetensorsBuilder().F32("fc.weight", {3, 2}, {1, 2, 3, 4, 0, 1}).Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_TRUE(set.ok()) << set.status();
  const methods::CalibrationStats* stats = set->Find("fc.weight");
  ASSERT_NE(stats, nullptr);
  EXPECT_EQ(stats->dim, 2);
  EXPECT_EQ(stats->samples, 3u);
  EXPECT_THAT(stats->gram, ElementsAre(10, 14, 14, 21));
  EXPECT_EQ(set->Find("other.weight"), nullptr);
}

TEST(CalibrationTest, GramWithSampleCountAsI64Tensor) {
  const int64_t samples = 128;
  const std::string file = SafetensorsBuilder()
                               .F32("a.weight.gram", {2, 2}, {4, 1, 1, 3})
                               .Add("a.weight.samples", "I64", {1}, &samples, sizeof samples)
                               .Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_TRUE(set.ok()) << set.status();
  const methods::CalibrationStats* stats = set->Find("a.weight");
  ASSERT_NE(stats, nullptr);
  EXPECT_EQ(stats->samples, 128u);
  EXPECT_THAT(stats->gram, ElementsAre(4, 1, 1, 3));
  EXPECT_THAT(set->WeightNames(), ElementsAre("a.weight"));
}

TEST(CalibrationTest, SampleCountFromMetadataOrFloatTensor) {
  const double samples = 7;
  const std::string file = SafetensorsBuilder()
                               .F32("a.gram", {1, 1}, {2})
                               .F32("b.gram", {1, 1}, {3})
                               .Add("b.samples", "F64", {1}, &samples, sizeof samples)
                               .Metadata("a.samples", "42")
                               .Metadata("format", "bonsai-calibration")
                               .Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->Find("a")->samples, 42u);
  EXPECT_EQ(set->Find("b")->samples, 7u);
}

TEST(CalibrationTest, WeightsThatReadTheSameInputShareOneGramMatrixAndEachApplyGetsItsOwn) {
  const std::string file = SafetensorsBuilder()
                               .F32("q.gram", {2, 2}, {4, 1, 1, 3})
                               .Metadata("q.samples", "5")
                               .Metadata("k.gram_of", "q")
                               .Metadata("v.gram_of", "q")
                               .Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_TRUE(set.ok()) << set.status();
  for (const char* name : {"q", "k", "v"}) {
    ASSERT_NE(set->Find(name), nullptr) << name;
    EXPECT_THAT(set->Find(name)->gram, ElementsAre(4, 1, 1, 3)) << name;
    EXPECT_EQ(set->Find(name)->samples, 5u) << name;
  }
  // A method may consume its statistics in place: the others keep theirs,
  // and the last user gets the stored matrix itself (no copy).
  const float* stored = set->Find("q")->gram.data();
  auto q = set->TakeForApply("q");
  q->gram.assign(4, 0.0f);
  auto k = set->TakeForApply("k");
  EXPECT_THAT(k->gram, ElementsAre(4, 1, 1, 3));
  auto v = set->TakeForApply("v");
  EXPECT_THAT(v->gram, ElementsAre(4, 1, 1, 3));
  EXPECT_EQ(v->gram.data(), stored);
  EXPECT_EQ(set->TakeForApply("v"), nullptr);
}

TEST(CalibrationTest, ManyAliasesOfOneMatrixCostNoMemoryUntilUsed) {
  SafetensorsBuilder builder;
  builder.F32("q.gram", {2, 2}, {4, 1, 1, 3});
  for (int i = 0; i < 10000; ++i) builder.Metadata("w" + std::to_string(i) + ".gram_of", "q");
  absl::StatusOr<CalibrationSet> set = ParseCalibration(builder.Build());
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->bytes(), 2 * 16u) << "the matrix and one working copy";
}

TEST(CalibrationTest, AnAliasOfAWeightWithoutStatisticsIsInvalidArgument) {
  const std::string file = SafetensorsBuilder()
                               .F32("q.gram", {1, 1}, {2})
                               .Metadata("k.gram_of", "missing")
                               .Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(set.status().message()), HasSubstr("names 'missing'"));
}

TEST(CalibrationTest, NonSquareGramIsInvalidArgumentNamingTheTensor) {
  const std::string file = SafetensorsBuilder().F32("fc.weight.gram", {2, 3}, {1, 2, 3, 4, 5, 6}).Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(), HasSubstr("'fc.weight.gram'"));
  EXPECT_THAT(set.status().message(), HasSubstr("square"));
}

TEST(CalibrationTest, ActivationsOfAnotherRankAreInvalidArgumentNamingTheTensor) {
  const std::string file =
      SafetensorsBuilder().F32("fc.weight", {1, 2, 2}, {1, 2, 3, 4}).Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(), HasSubstr("'fc.weight'"));
  EXPECT_THAT(set.status().message(), HasSubstr("[n, d_in]"));
}

TEST(CalibrationTest, SampleCountWithoutDataIsInvalidArgument) {
  const int64_t samples = 3;
  const std::string file =
      SafetensorsBuilder().Add("x.samples", "I64", {1}, &samples, sizeof samples).Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("'x.gram'"));
}

TEST(CalibrationTest, ActivationsAndGramOfDifferentDimensionsAreInvalidArgument) {
  const std::string file = SafetensorsBuilder()
                               .F32("w", {1, 2}, {1, 2})
                               .F32("w.gram", {3, 3}, std::vector<float>(9, 1.0f))
                               .Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("dimension"));
}

// Fuzzing found that a few bytes of header could make the server allocate
// any d x d Gram matrix: activations [1, 100000] (400 KB) asked for 40 GB,
// [0, 2^32] for a product that wrapped around. The Gram matrices of a file
// now get at most twice its size (at least kMinCalibrationGramBudgetBytes).
TEST(CalibrationTest, ActivationsFarWiderThanTallAreRefusedBeforeTheirGramIsAllocated) {
  const std::string file =
      SafetensorsBuilder().F32("fc.weight", {1, 100000}, std::vector<float>(100000, 1.0f)).Build();
  absl::StatusOr<CalibrationSet> set = ParseCalibration(file);
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(), HasSubstr("'fc.weight' needs a 100000 x 100000"));
  EXPECT_THAT(set.status().message(), HasSubstr("'<weight>.gram'"));

  const std::string empty = SafetensorsBuilder().F32("fc.weight", {0, int64_t{1} << 32}, {}).Build();
  set = ParseCalibration(empty);
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("4294967296 x 4294967296"));
}

TEST(CalibrationTest, GramBudgetSpansAllWeightsOfTheFile) {
  // Each [1, 1024] row asks for a 4 MiB Gram: 16 fit in the 64 MiB floor.
  SafetensorsBuilder builder;
  for (int i = 0; i < 17; ++i) builder.F32(absl::StrCat("w", i), {1, 1024}, std::vector<float>(1024, 1.0f));
  absl::StatusOr<CalibrationSet> set = ParseCalibration(builder.Build());
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("'w16' needs a 1024 x 1024"));
}

TEST(CalibrationTest, NotSafetensorsIsInvalidArgument) {
  absl::StatusOr<CalibrationSet> set = ParseCalibration("PK\x03\x04 a zip file");
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(), HasSubstr("safetensors"));
}

TEST(CalibrationTest, EmptyUploadIsAnEmptySet) {
  absl::StatusOr<CalibrationSet> set = ParseCalibration("");
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->size(), 0u);
}

}  // namespace
}  // namespace bonsai::engine
