// The catalogue of methods: how each is built from a config and how
// GetCapabilities describes it. Adding a method means one entry here.
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/methods/magnitude.h"
#include "server/methods/method.h"

namespace bonsai::methods {
namespace {

using Factory = std::function<absl::StatusOr<std::unique_ptr<Method>>(const MethodConfig&)>;

struct Entry {
  MethodDescription description;
  Factory factory;
};

ParameterDescription SparsityParameter() {
  return {"sparsity", "double", "0", "fraction of weights set to zero, in [0, 1)"};
}

absl::Status CheckSparsity(const MethodConfig& config) {
  if (!(config.sparsity >= 0.0 && config.sparsity < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sparsity must be in [0, 1); got ", config.sparsity,
        ". Ask for e.g. 0.5 to zero half of the weights."));
  }
  return absl::OkStatus();
}

const std::vector<Entry>& Entries() {
  static const auto* entries = new std::vector<Entry>{
      {{"magnitude",
        "Zero the weights with the smallest |w|, per tensor (scope layer) or "
        "with one threshold over all selected tensors (scope global).",
        {SparsityParameter(),
         {"scope", "Scope", "SCOPE_LAYER", "layer: each tensor to the target; global: one threshold"}},
        false,
        {"onnx", "safetensors"}},
       [](const MethodConfig& config) -> absl::StatusOr<std::unique_ptr<Method>> {
         if (auto s = CheckSparsity(config); !s.ok()) return s;
         return std::make_unique<MagnitudeMethod>(config);
       }},
  };
  return *entries;
}

}  // namespace

const std::vector<MethodDescription>& DescribeMethods() {
  static const auto* descriptions = [] {
    auto* out = new std::vector<MethodDescription>;
    for (const Entry& entry : Entries()) out->push_back(entry.description);
    return out;
  }();
  return *descriptions;
}

absl::StatusOr<std::unique_ptr<Method>> CreateMethod(const MethodConfig& config) {
  std::vector<std::string> known;
  for (const Entry& entry : Entries()) {
    if (entry.description.name == config.method) return entry.factory(config);
    known.push_back(entry.description.name);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown method '", config.method, "'; this server offers: ",
      absl::StrJoin(known, ", "), " (see GetCapabilities)"));
}

}  // namespace bonsai::methods
