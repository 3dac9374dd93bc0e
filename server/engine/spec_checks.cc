#include "server/engine/spec_checks.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace bonsai::engine {

absl::Status CheckOptionsAreRead(const std::string& method, const v1::MethodOptions& options,
                                 absl::string_view where) {
  const methods::MethodDescription* description = nullptr;
  for (const auto& candidate : methods::DescribeMethods()) {
    if (candidate.name == method) description = &candidate;
  }
  if (description == nullptr) return absl::OkStatus();  // the method check names it
  std::vector<std::string> read;
  for (const auto& parameter : description->parameters) {
    if (absl::StartsWith(parameter.name, "options.")) read.push_back(parameter.name);
  }
  std::vector<const google::protobuf::FieldDescriptor*> set;
  options.GetReflection()->ListFields(options, &set);
  for (const auto* field : set) {
    const std::string name = absl::StrCat("options.", field->name());
    if (std::find(read.begin(), read.end(), name) != read.end()) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        where, "method '", method, "' does not read ", name, " (it reads ",
        read.empty() ? std::string("no options") : absl::StrJoin(read, ", "),
        "); remove it, or choose a method that uses it (see GetCapabilities)"));
  }
  return absl::OkStatus();
}

absl::Status CheckRuleHasSparsity(const methods::MethodConfig& config, absl::string_view where) {
  const bool nm = config.n != 0 || config.m != 0;
  bool needs = config.method == "magnitude" || config.method == "structured";
  if (config.method == "wanda") needs = !nm;
  if (config.method == "sparsegpt") needs = !nm && config.bits == 0;
  if (!needs || config.sparsity > 0.0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      where, "method '", config.method,
      "' needs a sparsity in (0, 1) and the rule gives none, so it would change nothing; "
      "set sparsity (e.g. 0.5), or use method 'none' to keep these tensors dense"));
}

}  // namespace bonsai::engine
