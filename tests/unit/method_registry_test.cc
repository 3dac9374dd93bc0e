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

}  // namespace
}  // namespace bonsai::methods
