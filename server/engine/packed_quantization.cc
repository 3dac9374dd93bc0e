#include "server/engine/packed_quantization.h"

#include "absl/strings/str_cat.h"
#include "server/formats/onnx_quantized.h"

namespace bonsai::engine {

formats::QuantLayout QuantLayoutOf(const v1::CompressionSpec& spec) {
  return spec.quantized_layout() == v1::QUANTIZED_LAYOUT_GPTQ ? formats::QuantLayout::kGptq
                                                              : formats::QuantLayout::kCompressedTensors;
}

absl::Status CheckPackedQuantization(const ValidatedSpec& spec, const CompressionPlan& plan,
                                     const formats::Model& model) {
  if (spec.proto.output() != v1::OUTPUT_MODE_PACKED) return absl::OkStatus();
  const MethodGroup* first = nullptr;  // the first quantizing group with a tensor
  for (const MethodGroup& group : plan.groups) {
    const int bits = methods::QuantizedBits(group.config);
    if (bits == 0 || group.tensors.empty()) continue;
    if (model.format() == formats::Format::kSafetensors &&
        QuantLayoutOf(spec.proto) == formats::QuantLayout::kGptq && first != nullptr &&
        (bits != methods::QuantizedBits(first->config) || group.config.group_size != first->config.group_size ||
         group.config.symmetric != first->config.symmetric)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the gptq packed layout has one quantization setting per model, but rule \"",
          group.rule_name.empty() ? "(the job's method)" : group.rule_name,
          "\" asks for other bits, group_size or symmetric than \"",
          first->rule_name.empty() ? "(the job's method)" : first->rule_name,
          "\"; use quantized_layout compressed-tensors"));
    }
    if (first == nullptr) first = &group;
    for (size_t index : group.tensors) {
      const formats::TensorInfo& info = model.tensors()[index];
      if (model.format() == formats::Format::kOnnx) {
        if (auto s = formats::CheckOnnxQuantizedPacking(info, bits, group.config.group_size,
                                                     model.onnx_opset());
            !s.ok()) {
          return s;
        }
      } else if (bits == 3 && QuantLayoutOf(spec.proto) == formats::QuantLayout::kGptq) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor \"", info.name, "\": the gptq packed layout stores 2, 4 or 8 bits, not 3; "
            "use quantized_layout compressed-tensors or another bit width"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace bonsai::engine
