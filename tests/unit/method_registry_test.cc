#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/methods/method.h"

namespace bonsai::methods {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(MethodRegistryTest, CapabilitiesListEveryMethodAndWhichNeedCalibration) {
  std::vector<std::string> names, calibrated;
  for (const MethodDescription& d : DescribeMethods()) {
    names.push_back(d.name);
    if (d.needs_calibration) calibrated.push_back(d.name);
    EXPECT_FALSE(d.description.empty()) << d.name;
  }
  EXPECT_THAT(names, ElementsAre("magnitude", "nm", "structured", "wanda", "sparsegpt",
                                 "binarize", "ternarize", "rtn", "gptq"));
  EXPECT_THAT(calibrated, ElementsAre("wanda", "sparsegpt", "gptq"));
}

TEST(MethodRegistryTest, EveryListedMethodCanBeCreatedWithValidParameters) {
  for (const MethodDescription& d : DescribeMethods()) {
    MethodConfig config;
    config.method = d.name;
    config.sparsity = 0.5;
    if (d.name == "nm") config.n = 2, config.m = 4;
    EXPECT_TRUE(CreateMethod(config).ok()) << d.name;
  }
}

TEST(MethodRegistryTest, HalfAnNMPatternIsInvalidArgumentSayingWhatToSet) {
  MethodConfig config;
  config.method = "wanda";
  config.sparsity = 0.5;
  config.n = 2;
  auto method = CreateMethod(config);
  ASSERT_FALSE(method.ok());
  EXPECT_EQ(method.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(method.status().message(), HasSubstr("wanda needs 0 < n < m <= 32; got n=2 m=0"));
}

TEST(MethodRegistryTest, UnknownMethodNamesTheOnesOffered) {
  MethodConfig config;
  config.method = "prune_everything";
  auto method = CreateMethod(config);
  ASSERT_FALSE(method.ok());
  EXPECT_THAT(method.status().message(), HasSubstr("sparsegpt"));
}

MethodConfig Config(const std::string& method, int n = 0, int m = 0, int bits = 0) {
  MethodConfig config;
  config.method = method;
  config.n = n;
  config.m = m;
  config.bits = bits;
  return config;
}

TEST(MethodRegistryTest, OnlyStructuredPrunesWholeChannels) {
  for (const MethodDescription& described : DescribeMethods()) {
    EXPECT_EQ(PrunesWholeChannels(Config(described.name)), described.name == "structured")
        << described.name;
  }
  EXPECT_FALSE(PrunesWholeChannels(Config("no_such_method")));
}

TEST(MethodRegistryTest, WhichConfigsNeedASparsity) {
  EXPECT_TRUE(NeedsSparsity(Config("magnitude")));
  EXPECT_TRUE(NeedsSparsity(Config("structured")));
  EXPECT_FALSE(NeedsSparsity(Config("nm", 2, 4)));  // the pattern fixes it
  EXPECT_TRUE(NeedsSparsity(Config("wanda")));
  EXPECT_FALSE(NeedsSparsity(Config("wanda", 2, 4)));
  EXPECT_TRUE(NeedsSparsity(Config("sparsegpt")));
  EXPECT_FALSE(NeedsSparsity(Config("sparsegpt", 2, 4)));
  EXPECT_FALSE(NeedsSparsity(Config("sparsegpt", 0, 0, 4)));  // quantizing alone
  for (const char* method : {"binarize", "ternarize", "rtn", "gptq", "no_such_method"}) {
    EXPECT_FALSE(NeedsSparsity(Config(method))) << method;
  }
}

TEST(MethodRegistryTest, QuantizedBitsAreTheGridsOrZero) {
  EXPECT_EQ(QuantizedBits(Config("rtn")), 4);  // the default
  EXPECT_EQ(QuantizedBits(Config("rtn", 0, 0, 8)), 8);
  EXPECT_EQ(QuantizedBits(Config("gptq", 0, 0, 3)), 3);
  EXPECT_EQ(QuantizedBits(Config("sparsegpt")), 0);  // prunes only
  EXPECT_EQ(QuantizedBits(Config("sparsegpt", 0, 0, 4)), 4);
  for (const char* method : {"magnitude", "nm", "structured", "wanda", "binarize", "ternarize",
                             "no_such_method"}) {
    EXPECT_EQ(QuantizedBits(Config(method)), 0) << method;
  }
}

}  // namespace
}  // namespace bonsai::methods
