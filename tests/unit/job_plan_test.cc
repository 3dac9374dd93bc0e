// Spec validation and planning against a list of tensors: what is refused
// before any model byte, and what structured pruning leaves alone.
#include "server/engine/job_plan.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"

namespace bonsai::engine {
namespace {

using ::testing::HasSubstr;

formats::TensorInfo Weight(const std::string& name, bool head = false) {
  formats::TensorInfo info;
  info.name = name;
  info.shape = {4, 4};
  info.dtype = tensor::DType::kF32;
  info.params = 16;
  info.selected_by_default = true;
  info.layout = formats::WeightLayout{0, 1};
  info.output_head = head;
  return info;
}

std::vector<formats::TensorInfo> Model() {
  return {Weight("model.layers.0.mlp.up_proj.weight"),
          Weight("model.layers.0.self_attn.q_proj.weight"), Weight("classifier.weight", true)};
}

v1::Rule Rule(const std::string& regex, const std::string& method, double sparsity) {
  v1::Rule rule;
  rule.set_tensor_regex(regex);
  rule.set_method(method);
  rule.set_sparsity(sparsity);
  return rule;
}

absl::StatusOr<CompressionPlan> Plan(const v1::CompressionSpec& spec) {
  auto validated = ValidateSpec(spec);
  if (!validated.ok()) return validated.status();
  return PlanCompression(*validated, Model());
}

std::vector<std::string> Planned(const CompressionPlan& plan) {
  std::vector<std::string> names;
  const auto model = Model();
  for (size_t i = 0; i < plan.group_of_tensor.size(); ++i) {
    if (plan.group_of_tensor[i] >= 0) names.push_back(model[i].name);
  }
  return names;
}

TEST(SpecValidation, MethodTogetherWithRulesIsInvalidArgument) {
  v1::CompressionSpec spec;
  spec.set_method("magnitude");
  *spec.add_rules() = Rule("mlp", "magnitude", 0.5);
  auto status = ValidateSpec(spec).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("both method 'magnitude' and 1 rules"));
}

TEST(SpecValidation, SpecSparsityBesideRulesIsInvalidArgument) {
  v1::CompressionSpec spec;
  spec.set_sparsity(0.5);
  *spec.add_rules() = Rule("mlp", "magnitude", 0.5);
  EXPECT_THAT(ValidateSpec(spec).status().message(), HasSubstr("belong in each rule"));
}

TEST(SpecValidation, RuleWithoutTheSparsityItsMethodNeedsIsInvalidArgument) {
  for (const char* method : {"magnitude", "structured", "wanda", "sparsegpt"}) {
    v1::CompressionSpec spec;
    *spec.add_rules() = Rule("mlp", method, 0.0);
    auto status = ValidateSpec(spec).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << method;
    EXPECT_THAT(status.message(), HasSubstr("needs a sparsity")) << method;
  }
  // The pattern or the bits fix the result: no sparsity needed.
  v1::CompressionSpec spec;
  *spec.add_rules() = Rule("mlp", "sparsegpt", 0.0);
  spec.mutable_rules(0)->mutable_options()->mutable_sparsegpt()->mutable_quant()->set_bits(4);
  *spec.add_rules() = Rule("attn", "wanda", 0.0);
  spec.mutable_rules(1)->mutable_options()->mutable_wanda()->mutable_nm()->set_n(2);
  spec.mutable_rules(1)->mutable_options()->mutable_wanda()->mutable_nm()->set_m(4);
  *spec.add_rules() = Rule("cls", "rtn", 0.0);
  EXPECT_TRUE(ValidateSpec(spec).ok()) << ValidateSpec(spec).status();
}

TEST(SpecValidation, AnotherMethodsOptionsAreInvalidArgumentNamingBoth) {
  v1::CompressionSpec spec;
  spec.set_method("magnitude");
  spec.set_sparsity(0.5);
  spec.mutable_options()->mutable_structured()->set_norm(v1::NORM_L1);
  auto status = ValidateSpec(spec).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("method 'magnitude' does not read options.structured (StructuredOptions, "
                        "the options of method 'structured'); it takes no options"));

  v1::CompressionSpec rules;
  *rules.add_rules() = Rule("mlp", "nm", 0.0);
  rules.mutable_rules(0)->set_name("mlp");
  rules.mutable_rules(0)->mutable_options()->mutable_sparsegpt()->mutable_nm()->set_n(2);
  status = ValidateSpec(rules).status();
  EXPECT_THAT(status.message(), HasSubstr("mlp: method 'nm' does not read options.sparsegpt "
                                          "(SparseGptOptions"));
  EXPECT_THAT(status.message(), HasSubstr("its own go in options.nm (NmOptions)"));
}

TEST(SpecValidation, AnEmptyOptionsMessageOfAnotherMethodIsRefusedToo) {
  // Present though empty: the client chose it, so it is a mistake all the same.
  v1::CompressionSpec spec;
  spec.set_method("rtn");
  spec.mutable_options()->mutable_gptq();
  EXPECT_THAT(ValidateSpec(spec).status().message(),
              HasSubstr("method 'rtn' does not read options.gptq (GptqOptions"));
}

TEST(SpecValidation, OptionsOnAKeepDenseRuleAreInvalidArgument) {
  v1::CompressionSpec spec;
  *spec.add_rules() = Rule("mlp", "none", 0.0);
  spec.mutable_rules(0)->mutable_options()->mutable_rtn()->set_bits(4);
  auto status = ValidateSpec(spec).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("rule[0]: method 'none' does not read options.rtn (QuantOptions"));
}

TEST(SpecValidation, AnOlderClientsFlatOptionsAreInvalidArgumentNotDropped) {
  // What a client from before per-method options sends for bits=4: field 8
  // of MethodOptions, which this proto reserves. Read as nothing, sparsegpt
  // would silently prune without quantizing.
  v1::CompressionSpec spec;
  spec.set_method("sparsegpt");
  spec.set_sparsity(0.5);
  v1::MethodOptions options;
  ASSERT_TRUE(options.ParseFromString(std::string("\x40\x04", 2)));
  *spec.mutable_options() = options;
  auto status = ValidateSpec(spec).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("options carry fields this server does not know "
                                          "(options.8)"));
  EXPECT_THAT(status.message(), HasSubstr("update the client"));

  // Also inside a method's own message (a newer client's field).
  v1::CompressionSpec newer;
  newer.set_method("rtn");
  v1::QuantOptions* rtn = newer.mutable_options()->mutable_rtn();
  rtn->GetReflection()->MutableUnknownFields(rtn)->AddVarint(9, 1);
  EXPECT_THAT(ValidateSpec(newer).status().message(), HasSubstr("(options.rtn.9)"));
}

TEST(SpecValidation, OptionsTheMethodReadsAreAccepted) {
  v1::CompressionSpec spec;
  spec.set_method("gptq");
  v1::GptqOptions* gptq = spec.mutable_options()->mutable_gptq();
  gptq->mutable_quant()->set_bits(4);
  gptq->mutable_quant()->set_group_size(128);
  gptq->set_act_order(true);
  gptq->set_dampening(0.1f);
  EXPECT_TRUE(ValidateSpec(spec).ok()) << ValidateSpec(spec).status();
}

TEST(Planning, NoSelectedTensorIsInvalidArgumentNamingTheSelection) {
  v1::CompressionSpec spec;
  spec.set_method("magnitude");
  spec.set_sparsity(0.5);
  spec.add_exclude("weight$");
  auto status = Plan(spec).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("no tensor of the model is selected"));
  EXPECT_THAT(status.message(), HasSubstr("exclude ['weight$']"));
  EXPECT_THAT(status.message(), HasSubstr("inspect"));

  spec.clear_exclude();
  spec.set_include_only(true);
  spec.add_include("decoder");
  status = Plan(spec).status();
  EXPECT_THAT(status.message(), HasSubstr("include_only, include ['decoder']"));
}

TEST(Planning, RecipeWhoseRulesMatchNothingIsInvalidArgument) {
  v1::CompressionSpec spec;
  *spec.add_rules() = Rule("^layers\\.0\\.", "magnitude", 0.5);
  auto status = Plan(spec).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("no rule matches any of the 3 selected tensors"));
  EXPECT_THAT(status.message(), HasSubstr("'^layers\\.0\\.'"));
  EXPECT_THAT(status.message(), HasSubstr("model.layers.0.mlp.up_proj.weight"));
}

TEST(Planning, RuleThatMatchesNothingBesideOthersIsANote) {
  v1::CompressionSpec spec;
  *spec.add_rules() = Rule("^model\\.layers\\.0\\.", "magnitude", 0.5);
  *spec.add_rules() = Rule("^decoder\\.", "magnitude", 0.5);
  auto plan = Plan(spec);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->notes.size(), 1u);
  EXPECT_THAT(plan->notes[0], HasSubstr("rule[1] (tensor_regex '^decoder\\.') took no tensor"));
}

TEST(Planning, StructuredLeavesOutputHeadsWholeAndSaysHowToIncludeThem) {
  v1::CompressionSpec spec;
  spec.set_method("structured");
  spec.set_sparsity(0.5);
  auto plan = Plan(spec);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(Planned(*plan), (std::vector<std::string>{"model.layers.0.mlp.up_proj.weight",
                                                     "model.layers.0.self_attn.q_proj.weight"}));
  ASSERT_EQ(plan->notes.size(), 1u);
  EXPECT_THAT(plan->notes[0], HasSubstr("left classifier.weight whole"));
  EXPECT_THAT(plan->notes[0], HasSubstr("--include 'classifier.weight'"));

  spec.add_include("^classifier\\.");
  plan = Plan(spec);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Planned(*plan).size(), 3u);
  EXPECT_TRUE(plan->notes.empty());
}

TEST(Planning, UnstructuredMethodsStillReachHeads) {
  v1::CompressionSpec spec;
  spec.set_method("magnitude");
  spec.set_sparsity(0.5);
  auto plan = Plan(spec);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Planned(*plan).size(), 3u);
  EXPECT_TRUE(plan->notes.empty());
}

TEST(Planning, OverrideOfATensorNoRuleMatchesIsInvalidArgument) {
  v1::CompressionSpec spec;
  *spec.add_rules() = Rule("mlp", "magnitude", 0.5);
  (*spec.mutable_sparsity_overrides())["classifier.weight"] = 0.2;
  EXPECT_THAT(Plan(spec).status().message(), HasSubstr("which no rule matches"));
}

}  // namespace
}  // namespace bonsai::engine
