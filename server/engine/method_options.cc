#include "server/engine/method_options.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"

namespace bonsai::engine {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// The paths ("options.5", "options.sparsegpt.quant.9") of every field in
// `message` and the messages set inside it that this build's proto lacks.
void CollectUnknownFields(const Message& message, const std::string& path,
                          std::vector<std::string>& unknown) {
  const auto* reflection = message.GetReflection();
  const auto& fields = reflection->GetUnknownFields(message);
  for (int i = 0; i < fields.field_count(); ++i) {
    unknown.push_back(absl::StrCat(path, ".", fields.field(i).number()));
  }
  std::vector<const FieldDescriptor*> set;
  reflection->ListFields(message, &set);
  for (const FieldDescriptor* field : set) {
    if (field->type() == FieldDescriptor::TYPE_MESSAGE && !field->is_repeated()) {
      CollectUnknownFields(reflection->GetMessage(message, field),
                           absl::StrCat(path, ".", field->name()), unknown);
    }
  }
}

// A method of the registry, or "none" (a rule that keeps tensors dense).
bool IsKnownMethod(const std::string& method) {
  return method == "none" || methods::IsMethod(method);
}

// The message set in the oneof (named after its method), or null.
const FieldDescriptor* GivenOptions(const v1::MethodOptions& options) {
  return options.GetReflection()->GetOneofFieldDescriptor(
      options, v1::MethodOptions::descriptor()->FindOneofByName("method"));
}

void ReadNm(const v1::NmOptions& nm, methods::MethodConfig& config) {
  config.n = static_cast<int>(nm.n());
  config.m = static_cast<int>(nm.m());
}

void ReadQuant(const v1::QuantOptions& quant, methods::MethodConfig& config) {
  config.bits = static_cast<int>(quant.bits());
  if (quant.has_group_size()) config.group_size = quant.group_size();
  config.symmetric = quant.symmetric();
}

// gptq's and sparsegpt's column sweep; 0 keeps the method's default.
void ReadSweep(uint32_t block_size, float dampening, methods::MethodConfig& config) {
  if (block_size > 0) config.block_size = static_cast<int>(block_size);
  if (dampening > 0) config.dampening = dampening;
}

}  // namespace

absl::Status CheckOptionsBelongToMethod(const std::string& method, const v1::MethodOptions& options,
                                        absl::string_view where) {
  if (!IsKnownMethod(method)) return absl::OkStatus();  // the method check names it
  const FieldDescriptor* given = GivenOptions(options);
  if (given != nullptr && given->name() != method) {
    const FieldDescriptor* own = v1::MethodOptions::descriptor()->FindFieldByName(method);
    const std::string fix =
        own == nullptr
            ? absl::StrCat("it takes no options: remove them, or choose method '", given->name(),
                           "'")
            : absl::StrCat("its own go in options.", own->name(), " (", own->message_type()->name(),
                           "): move them there, or choose method '", given->name(), "'");
    return absl::InvalidArgumentError(
        absl::StrCat(where, "method '", method, "' does not read options.", given->name(), " (",
                     given->message_type()->name(), ", the options of method '", given->name(),
                     "'); ", fix, " (see GetCapabilities)"));
  }
  std::vector<std::string> unknown;
  CollectUnknownFields(options, "options", unknown);
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "options carry fields this server does not know (", absl::StrJoin(unknown, ", "),
        "), so it would not read them. MethodOptions fields 1-11 are the flat options that "
        "clients sent before each method had its own message (options.nm, options.sparsegpt, "
        "...); update the client, or leave the fields out (see GetCapabilities)"));
  }
  return absl::OkStatus();
}

methods::MethodConfig ToMethodConfig(const std::string& method, double sparsity, v1::Scope scope,
                                     const v1::MethodOptions& options) {
  methods::MethodConfig config;
  config.method = method;
  config.sparsity = sparsity;
  config.scope = scope == v1::SCOPE_GLOBAL ? methods::Scope::kGlobal : methods::Scope::kLayer;
  const FieldDescriptor* given = GivenOptions(options);
  if (given == nullptr || given->name() != method) return config;
  switch (options.method_case()) {
    case v1::MethodOptions::kNm:
      ReadNm(options.nm(), config);
      break;
    case v1::MethodOptions::kStructured:
      config.norm = options.structured().norm() == v1::NORM_L1 ? methods::NormKind::kL1
                                                               : methods::NormKind::kL2;
      config.structured_mode = options.structured().mode() == v1::STRUCTURED_MODE_PHYSICAL
                                   ? methods::StructuredMode::kPhysical
                                   : methods::StructuredMode::kMask;
      break;
    case v1::MethodOptions::kWanda:
      ReadNm(options.wanda().nm(), config);
      break;
    case v1::MethodOptions::kSparsegpt:
      ReadNm(options.sparsegpt().nm(), config);
      ReadQuant(options.sparsegpt().quant(), config);
      ReadSweep(options.sparsegpt().block_size(), options.sparsegpt().dampening(), config);
      break;
    case v1::MethodOptions::kTernarize:
      config.per_channel = options.ternarize().per_channel();
      break;
    case v1::MethodOptions::kRtn:
      ReadQuant(options.rtn(), config);
      break;
    case v1::MethodOptions::kGptq:
      ReadQuant(options.gptq().quant(), config);
      ReadSweep(options.gptq().block_size(), options.gptq().dampening(), config);
      config.act_order = options.gptq().act_order();
      break;
    case v1::MethodOptions::METHOD_NOT_SET:
      break;
  }
  return config;
}

absl::Status CheckRuleHasSparsity(const methods::MethodConfig& config, absl::string_view where) {
  if (!methods::NeedsSparsity(config) || config.sparsity > 0.0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      where, "method '", config.method,
      "' needs a sparsity in (0, 1) and the rule gives none, so it would change nothing; "
      "set sparsity (e.g. 0.5), or use method 'none' to keep these tensors dense"));
}

}  // namespace bonsai::engine
