// Planning, table-driven: which method touches which tensor at which
// sparsity, for the selection and rule features a spec combines.
#include "server/engine/job_plan.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace bonsai::engine {
namespace {

formats::TensorInfo Tensor(std::string name, bool by_default,
                           tensor::DType dtype = tensor::DType::kF32) {
  formats::TensorInfo info;
  info.name = std::move(name);
  info.shape = {4, 4};
  info.params = 16;
  info.dtype = dtype;
  info.selected_by_default = by_default;
  return info;
}

// A small language model's tensors: the weights are selected by default,
// embeddings, norms and the step counter are not.
std::vector<formats::TensorInfo> Model() {
  return {Tensor("embed.weight", false),
          Tensor("layers.0.attn.q.weight", true),
          Tensor("layers.0.mlp.up.weight", true),
          Tensor("layers.0.norm.weight", false),
          Tensor("layers.1.attn.q.weight", true, tensor::DType::kBF16),
          Tensor("layers.1.mlp.up.weight", true),
          Tensor("lm_head.weight", true),
          Tensor("step", false, tensor::DType::kOther)};
}

v1::CompressionSpec Spec(const std::string& text) {
  v1::CompressionSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

// One word per planned tensor, in model order: "name=rule@sparsity", with
// "job" for the job's own method and "/g" for a global group.
std::string Describe(const CompressionPlan& plan, const std::vector<formats::TensorInfo>& model) {
  std::vector<std::string> words;
  for (size_t i = 0; i < model.size(); ++i) {
    const int group = plan.group_of_tensor[i];
    if (group < 0) continue;
    const MethodGroup& g = plan.groups[group];
    words.push_back(absl::StrCat(model[i].name, "=", g.rule_name.empty() ? "job" : g.rule_name,
                                 "@", plan.sparsity_of_tensor[i],
                                 g.config.scope == methods::Scope::kGlobal ? "/g" : ""));
  }
  return absl::StrJoin(words, " ");
}

struct PlanCase {
  std::string what;
  std::string spec;
  std::string plan;
};

class PlanTest : public ::testing::TestWithParam<PlanCase> {};

TEST_P(PlanTest, PlansTheTensorsTheSpecSelects) {
  const auto model = Model();
  auto spec = ValidateSpec(Spec(GetParam().spec));
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto plan = PlanCompression(*spec, model);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(Describe(*plan, model), GetParam().plan);
}

INSTANTIATE_TEST_SUITE_P(
    Selection, PlanTest,
    ::testing::Values(
        PlanCase{"the default selection, never a non-floating tensor",
                 R"(method: "magnitude" sparsity: 0.5)",
                 "layers.0.attn.q.weight=job@0.5 layers.0.mlp.up.weight=job@0.5 "
                 "layers.1.attn.q.weight=job@0.5 layers.1.mlp.up.weight=job@0.5 "
                 "lm_head.weight=job@0.5"},
        PlanCase{"include adds, exclude removes, and exclude wins",
                 R"(method: "magnitude" sparsity: 0.5 include: "norm" include: "step"
                    exclude: "lm_head" exclude: "layers\\.1\\.attn")",
                 "layers.0.attn.q.weight=job@0.5 layers.0.mlp.up.weight=job@0.5 "
                 "layers.0.norm.weight=job@0.5 layers.1.mlp.up.weight=job@0.5"},
        PlanCase{"include_only ignores the default selection",
                 R"(method: "magnitude" sparsity: 0.3 include: "mlp" include_only: true)",
                 "layers.0.mlp.up.weight=job@0.3 layers.1.mlp.up.weight=job@0.3"},
        PlanCase{"global scope puts every selected tensor in one group",
                 R"(method: "magnitude" sparsity: 0.5 scope: SCOPE_GLOBAL exclude: "^layers")",
                 "lm_head.weight=job@0.5/g"},
        PlanCase{"an override gets its own layer-scope group and its own sparsity",
                 R"(method: "magnitude" sparsity: 0.5 scope: SCOPE_GLOBAL include_only: true
                    include: "mlp" sparsity_overrides { key: "layers.1.mlp.up.weight" value: 0.9 })",
                 "layers.0.mlp.up.weight=job@0.5/g layers.1.mlp.up.weight=job@0.9"},
        PlanCase{"an override selects a tensor the selection left out",
                 R"(method: "magnitude" sparsity: 0.5 include_only: true include: "lm_head"
                    sparsity_overrides { key: "embed.weight" value: 0.2 })",
                 "embed.weight=job@0.2 lm_head.weight=job@0.5"},
        PlanCase{"the first matching rule wins; none keeps dense; unmatched are left",
                 R"(rules { tensor_regex: "^layers\\.0\\." method: "none" name: "first" }
                    rules { tensor_regex: "attn" method: "magnitude" sparsity: 0.6 name: "attn" }
                    rules { tensor_regex: "mlp|attn" method: "magnitude" sparsity: 0.4 })",
                 "layers.1.attn.q.weight=attn@0.6 layers.1.mlp.up.weight=rule[2]@0.4"},
        PlanCase{"rules only see selected tensors",
                 R"(exclude: "layers\\.1" rules { tensor_regex: "weight" method: "magnitude" sparsity: 0.5 })",
                 "layers.0.attn.q.weight=rule[0]@0.5 layers.0.mlp.up.weight=rule[0]@0.5 lm_head.weight=rule[0]@0.5"},
        PlanCase{"an override on a rule's tensor keeps the rule's method at its own sparsity",
                 R"(rules { tensor_regex: "mlp" method: "magnitude" sparsity: 0.7 name: "mlp" }
                    sparsity_overrides { key: "layers.1.mlp.up.weight" value: 0.25 })",
                 "layers.0.mlp.up.weight=mlp@0.7 layers.1.mlp.up.weight=mlp@0.25"}),
    [](const ::testing::TestParamInfo<PlanCase>& info) { return absl::StrCat("case", info.index); });

struct RefusalCase {
  std::string what;
  std::string spec;
  std::string message;  // a part of the INVALID_ARGUMENT's message
};

class RefusalTest : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(RefusalTest, RefusesWithAMessageThatSaysWhat) {
  const auto model = Model();
  absl::Status status;
  auto spec = ValidateSpec(Spec(GetParam().spec));
  if (!spec.ok()) {
    status = spec.status();
  } else {
    status = PlanCompression(*spec, model).status();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << GetParam().what << ": " << status;
  EXPECT_NE(status.message().find(GetParam().message), std::string::npos)
      << GetParam().what << ": " << status.message();
}

INSTANTIATE_TEST_SUITE_P(
    Spec, RefusalTest,
    ::testing::Values(
        RefusalCase{"no method and no rules", R"(sparsity: 0.5)", "names no method"},
        RefusalCase{"an unknown method", R"(method: "prune_harder" sparsity: 0.5)", "prune_harder"},
        RefusalCase{"an include that does not compile", R"(method: "magnitude" sparsity: 0.5 include: "(")",
                    "include pattern '('"},
        RefusalCase{"a rule regex that does not compile names the rule",
                    R"(rules { tensor_regex: "[" method: "magnitude" sparsity: 0.5 name: "broken" })",
                    "broken: tensor_regex '['"},
        RefusalCase{"a rule's bad method names the rule",
                    R"(rules { tensor_regex: "mlp" method: "nope" sparsity: 0.5 })", "rule[0]: "},
        RefusalCase{"an override outside [0, 1)",
                    R"(method: "magnitude" sparsity: 0.5 sparsity_overrides { key: "lm_head.weight" value: 1.0 })",
                    "must be in [0, 1)"},
        RefusalCase{"an override naming a tensor the model lacks",
                    R"(method: "magnitude" sparsity: 0.5 sparsity_overrides { key: "lm_head" value: 0.5 })",
                    "which the model does not have"},
        RefusalCase{"an override naming an integer tensor",
                    R"(method: "magnitude" sparsity: 0.5 sparsity_overrides { key: "step" value: 0.5 })",
                    "not floating point"},
        RefusalCase{"a method together with rules",
                    R"(method: "magnitude" rules { tensor_regex: "mlp" method: "magnitude" sparsity: 0.7 })",
                    "gives both method 'magnitude' and 1 rules"},
        RefusalCase{"an override on a tensor no rule matches",
                    R"(rules { tensor_regex: "mlp" method: "magnitude" sparsity: 0.7 }
                       sparsity_overrides { key: "lm_head.weight" value: 0.25 })",
                    "which no rule matches"}),
    [](const ::testing::TestParamInfo<RefusalCase>& info) { return absl::StrCat("case", info.index); });

}  // namespace
}  // namespace bonsai::engine
