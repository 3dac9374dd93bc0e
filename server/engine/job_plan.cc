#include "server/engine/job_plan.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/engine/method_options.h"

namespace bonsai::engine {
namespace {

absl::Status CheckMethod(const methods::MethodConfig& config, absl::string_view where) {
  auto method = methods::CreateMethod(config);
  if (!method.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, method.status().message()));
  }
  return absl::OkStatus();
}

bool NamedByInclude(const formats::TensorInfo& info,
                    const std::vector<std::unique_ptr<RE2>>& include) {
  return std::any_of(include.begin(), include.end(),
                     [&](const auto& re) { return RE2::PartialMatch(info.name, *re); });
}

std::string QuotedList(const google::protobuf::RepeatedPtrField<std::string>& patterns) {
  std::vector<std::string> quoted;
  for (const std::string& p : patterns) quoted.push_back(absl::StrCat("'", p, "'"));
  return absl::StrCat("[", absl::StrJoin(quoted, ", "), "]");
}

std::string DescribeSelection(const ValidatedSpec& spec,
                              const std::vector<formats::TensorInfo>& tensors) {
  size_t by_default = 0;
  for (const auto& info : tensors) by_default += info.selected_by_default ? 1 : 0;
  std::vector<std::string> parts;
  if (spec.proto.include_only()) {
    parts.push_back("include_only");
  } else {
    parts.push_back(absl::StrCat(by_default, " of ", tensors.size(),
                                 " tensors selected by default"));
  }
  if (!spec.proto.include().empty()) {
    parts.push_back(absl::StrCat("include ", QuotedList(spec.proto.include())));
  }
  if (!spec.proto.exclude().empty()) {
    parts.push_back(absl::StrCat("exclude ", QuotedList(spec.proto.exclude())));
  }
  return absl::StrJoin(parts, ", ");
}

std::string FirstSelectedName(const ValidatedSpec& spec,
                              const std::vector<formats::TensorInfo>& tensors) {
  for (const auto& info : tensors) {
    if (IsSelected(info, spec.include, spec.exclude, spec.proto.include_only())) return info.name;
  }
  return tensors.empty() ? "" : tensors.front().name;
}

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<RE2>>> CompilePatterns(
    const google::protobuf::RepeatedPtrField<std::string>& patterns, absl::string_view field) {
  std::vector<std::unique_ptr<RE2>> compiled;
  for (const std::string& pattern : patterns) {
    RE2::Options options;
    options.set_log_errors(false);
    auto re = std::make_unique<RE2>(pattern, options);
    if (!re->ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " pattern '", pattern, "' does not compile: ", re->error(),
          ". Patterns use RE2 syntax (no backreferences or lookaround)."));
    }
    compiled.push_back(std::move(re));
  }
  return compiled;
}

bool IsSelected(const formats::TensorInfo& info,
                const std::vector<std::unique_ptr<RE2>>& include,
                const std::vector<std::unique_ptr<RE2>>& exclude, bool include_only) {
  if (!tensor::IsFloating(info.dtype)) return false;
  bool selected = include_only ? false : info.selected_by_default;
  for (const auto& re : include) {
    if (RE2::PartialMatch(info.name, *re)) selected = true;
  }
  for (const auto& re : exclude) {
    if (RE2::PartialMatch(info.name, *re)) selected = false;
  }
  return selected;
}

absl::StatusOr<ValidatedSpec> ValidateSpec(const v1::CompressionSpec& spec) {
  ValidatedSpec out;
  out.proto = spec;
  auto include = CompilePatterns(spec.include(), "include");
  if (!include.ok()) return include.status();
  out.include = std::move(*include);
  auto exclude = CompilePatterns(spec.exclude(), "exclude");
  if (!exclude.ok()) return exclude.status();
  out.exclude = std::move(*exclude);

  if (spec.method().empty() && spec.rules().empty()) {
    return absl::InvalidArgumentError(
        "the spec names no method; set method (e.g. \"magnitude\") or give rules");
  }
  if (!spec.method().empty() && !spec.rules().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the spec gives both method '", spec.method(), "' and ", spec.rules_size(),
        " rules; give one: method for every selected tensor, or rules (a method per pattern). "
        "To give the remaining tensors a method, end the rules with one whose tensor_regex "
        "is '.'"));
  }
  if (!spec.rules().empty() && (spec.sparsity() != 0.0 || spec.options().ByteSizeLong() != 0)) {
    return absl::InvalidArgumentError(
        "with rules, sparsity and options belong in each rule; the spec's own sparsity and "
        "options would be ignored, so leave them unset");
  }
  if (!spec.method().empty()) {
    if (auto s = CheckOptionsBelongToMethod(spec.method(), spec.options(), ""); !s.ok()) return s;
    out.job_method.config =
        ToMethodConfig(spec.method(), spec.sparsity(), spec.scope(), spec.options());
    if (auto s = CheckMethod(out.job_method.config, ""); !s.ok()) return s;
  }
  for (const auto& [name, sparsity] : spec.sparsity_overrides()) {
    if (!(sparsity >= 0.0 && sparsity < 1.0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sparsity override for '", name, "' must be in [0, 1); got ", sparsity));
    }
  }
  for (int i = 0; i < spec.rules_size(); ++i) {
    const v1::Rule& rule = spec.rules(i);
    RuleSpec parsed;
    parsed.name = rule.name().empty() ? absl::StrCat("rule[", i, "]") : rule.name();
    RE2::Options options;
    options.set_log_errors(false);
    parsed.pattern = std::make_unique<RE2>(rule.tensor_regex(), options);
    if (!parsed.pattern->ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          parsed.name, ": tensor_regex '", rule.tensor_regex(),
          "' does not compile: ", parsed.pattern->error()));
    }
    const std::string where = absl::StrCat(parsed.name, ": ");
    // First, so that another method's options are named as such, not as
    // values the method misses; "none" too, which takes none.
    if (auto s = CheckOptionsBelongToMethod(rule.method(), rule.options(), where); !s.ok()) {
      return s;
    }
    if (rule.method() == "none") {
      parsed.keep_dense = true;
    } else {
      parsed.config = ToMethodConfig(rule.method(), rule.sparsity(), rule.scope(), rule.options());
      if (auto s = CheckMethod(parsed.config, where); !s.ok()) return s;
      if (auto s = CheckRuleHasSparsity(parsed.config, where); !s.ok()) return s;
    }
    out.rules.push_back(std::move(parsed));
  }
  return out;
}

absl::StatusOr<CompressionPlan> PlanCompression(
    const ValidatedSpec& spec, const std::vector<formats::TensorInfo>& tensors) {
  CompressionPlan plan;
  plan.group_of_tensor.assign(tensors.size(), -1);
  plan.sparsity_of_tensor.assign(tensors.size(), 0.0);

  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < tensors.size(); ++i) index_of[tensors[i].name] = i;
  for (const auto& [name, sparsity] : spec.proto.sparsity_overrides()) {
    auto it = index_of.find(name);
    if (it == index_of.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sparsity override names tensor '", name,
          "', which the model does not have; see Inspect for the tensor names"));
    }
    if (!tensor::IsFloating(tensors[it->second].dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sparsity override names tensor '", name, "', which is not floating point"));
    }
  }

  // Groups are created on first use, so their order follows the model.
  std::map<int, int> group_of_rule;  // rule index (-1: job method) -> group
  auto group_for = [&](int rule_index, const RuleSpec& rule) -> absl::StatusOr<int> {
    auto it = group_of_rule.find(rule_index);
    if (it != group_of_rule.end()) return it->second;
    MethodGroup group;
    group.rule_name = rule.name;
    group.rule_index = rule_index;
    group.config = rule.config;
    auto method = methods::CreateMethod(rule.config);
    if (!method.ok()) return method.status();
    group.method = std::move(*method);
    plan.groups.push_back(std::move(group));
    const int index = static_cast<int>(plan.groups.size()) - 1;
    group_of_rule[rule_index] = index;
    return index;
  };

  size_t selected = 0;
  std::vector<bool> rule_matched(spec.rules.size(), false);
  std::vector<std::string> heads_left;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const formats::TensorInfo& info = tensors[i];
    auto override_it = spec.proto.sparsity_overrides().find(info.name);
    const bool overridden = override_it != spec.proto.sparsity_overrides().end();
    if (!overridden &&
        !IsSelected(info, spec.include, spec.exclude, spec.proto.include_only())) {
      continue;
    }
    ++selected;

    const RuleSpec* rule = &spec.job_method;
    int rule_index = -1;
    if (!spec.rules.empty()) {
      rule = nullptr;
      for (size_t r = 0; r < spec.rules.size(); ++r) {
        if (RE2::PartialMatch(info.name, *spec.rules[r].pattern)) {
          rule = &spec.rules[r];
          rule_index = static_cast<int>(r);
          rule_matched[r] = true;
          break;
        }
      }
      if (rule == nullptr && overridden) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sparsity override names tensor '", info.name,
            "', which no rule matches; add a rule for it (the override sets its sparsity)"));
      }
      if (rule == nullptr || rule->keep_dense) continue;
    } else if (spec.proto.method().empty()) {
      continue;
    }

    if (methods::PrunesWholeChannels(rule->config) && info.output_head && !overridden &&
        !NamedByInclude(info, spec.include)) {
      heads_left.push_back(info.name);
      continue;
    }

    double sparsity = rule->config.sparsity;
    if (overridden) {
      // An overridden tensor gets its own group in layer scope, so it does
      // not move the global threshold of the others.
      sparsity = override_it->second;
      MethodGroup group;
      group.rule_name = rule->name;
      group.config = rule->config;
      group.config.sparsity = sparsity;
      group.config.scope = methods::Scope::kLayer;
      auto method = methods::CreateMethod(group.config);
      if (!method.ok()) return method.status();
      group.method = std::move(*method);
      group.tensors.push_back(i);
      plan.groups.push_back(std::move(group));
      plan.group_of_tensor[i] = static_cast<int>(plan.groups.size()) - 1;
      plan.sparsity_of_tensor[i] = sparsity;
      continue;
    }
    auto group = group_for(rule_index, *rule);
    if (!group.ok()) return group.status();
    plan.groups[*group].tensors.push_back(i);
    plan.group_of_tensor[i] = *group;
    plan.sparsity_of_tensor[i] = sparsity;
  }

  if (selected == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no tensor of the model is selected (", DescribeSelection(spec, tensors),
        "), so the job would return it unchanged; list the tensor names with inspect "
        "(python3 -m bonsai inspect MODEL) and change include/exclude"));
  }
  if (!spec.rules.empty() && std::none_of(rule_matched.begin(), rule_matched.end(),
                                          [](bool matched) { return matched; })) {
    std::vector<std::string> patterns;
    for (const RuleSpec& rule : spec.rules) {
      patterns.push_back(absl::StrCat(rule.name, " '", rule.pattern->pattern(), "'"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "no rule matches any of the ", selected, " selected tensors (rules: ",
        absl::StrJoin(patterns, ", "),
        "); rule patterns are searched in tensor names such as '", FirstSelectedName(spec, tensors),
        "': list them with inspect (python3 -m bonsai inspect MODEL)"));
  }
  for (size_t r = 0; r < spec.rules.size(); ++r) {
    if (!rule_matched[r]) {
      plan.notes.push_back(absl::StrCat(spec.rules[r].name, " (tensor_regex '",
                                        spec.rules[r].pattern->pattern(),
                                        "') took no tensor: it matches no selected tensor "
                                        "that an earlier rule did not take"));
    }
  }
  if (!heads_left.empty()) {
    plan.notes.push_back(absl::StrCat(
        "structured pruning left ", absl::StrJoin(heads_left, ", "),
        " whole: ", heads_left.size() == 1 ? "its" : "their",
        " output channels are the model's outputs (classes, tokens), so removing one would "
        "remove an output. To prune ", heads_left.size() == 1 ? "it" : "them",
        " anyway, name ", heads_left.size() == 1 ? "it" : "them",
        " in an include pattern (e.g. --include '", heads_left.front(), "')"));
  }
  return plan;
}

}  // namespace bonsai::engine
