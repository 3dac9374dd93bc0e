#include "server/formats/safetensors_quantized.h"

#include <cstring>
#include <map>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/formats/quant_codes.h"

namespace bonsai::formats {
namespace {

using json = nlohmann::json;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

PackedPart NewPart(std::string suffix, std::string name, std::string dtype,
                   std::vector<int64_t> shape) {
  uint64_t count = 1;
  for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
  PackedPart part{std::move(suffix), std::move(dtype), std::move(shape), {}, std::move(name)};
  part.bytes.assign(count * 4, '\0');  // every part is 4-byte I32 or F32
  return part;
}

// ORs `code` into the little-endian uint32 word `word` of a part at `shift`.
void OrInto(PackedPart& part, int64_t word, uint32_t code, int shift) {
  uint32_t value;
  std::memcpy(&value, part.bytes.data() + word * 4, 4);
  value |= code << shift;
  std::memcpy(part.bytes.data() + word * 4, &value, 4);
}

void PutFloat(PackedPart& part, int64_t index, float value) {
  std::memcpy(part.bytes.data() + index * 4, &value, 4);
}

void PutInt(PackedPart& part, int64_t index, int32_t value) {
  std::memcpy(part.bytes.data() + index * 4, &value, 4);
}

PackedTensor CompressedTensorsForm(const SafetensorsEntry& entry, const QuantizedMatrix& m) {
  const QuantGrids& grids = *m.grids;
  const int p = 32 / grids.bits;
  const int64_t groups = grids.groups;
  PackedTensor packed;
  packed.parts.push_back(NewPart("_packed", "", "I32", {m.rows, CeilDiv(m.cols, p)}));
  packed.parts.push_back(NewPart("_scale", "", "F32", {m.rows, groups}));
  if (!grids.symmetric) {
    packed.parts.push_back(NewPart("_zero_point", "", "I32", {CeilDiv(m.rows, p), groups}));
  }
  packed.parts.push_back(
      NewPart("_shape", "", "I32", {static_cast<int64_t>(entry.shape.size())}));
  PackedPart& codes = packed.parts[0];
  const int64_t words_per_row = CeilDiv(m.cols, p);
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t c = 0; c < m.cols; ++c) {
      OrInto(codes, r * words_per_row + c / p, m.codes[r * m.cols + c], (c % p) * grids.bits);
    }
    for (int64_t g = 0; g < groups; ++g) {
      PutFloat(packed.parts[1], r * groups + g, m.scale(r, g));
      if (!grids.symmetric) {
        OrInto(packed.parts[2], (r / p) * groups + g, m.zero(r, g), (r % p) * grids.bits);
      }
    }
  }
  for (size_t i = 0; i < entry.shape.size(); ++i) {
    PutInt(packed.parts.back(), static_cast<int64_t>(i), static_cast<int32_t>(entry.shape[i]));
  }
  return packed;
}

PackedTensor GptqForm(const SafetensorsEntry& entry, const QuantizedMatrix& m) {
  const QuantGrids& grids = *m.grids;
  const int p = 32 / grids.bits;
  const int64_t groups = grids.groups;
  const std::string prefix = absl::EndsWith(entry.name, "weight")
                                 ? entry.name.substr(0, entry.name.size() - 6)
                                 : entry.name + ".";
  PackedTensor packed;
  packed.parts.push_back(NewPart(".qweight", prefix + "qweight", "I32", {CeilDiv(m.cols, p), m.rows}));
  packed.parts.push_back(NewPart(".qzeros", prefix + "qzeros", "I32", {groups, CeilDiv(m.rows, p)}));
  packed.parts.push_back(NewPart(".scales", prefix + "scales", "F32", {groups, m.rows}));
  packed.parts.push_back(NewPart(".g_idx", prefix + "g_idx", "I32", {m.cols}));
  const uint32_t mask = (1u << grids.bits) - 1;
  for (int64_t c = 0; c < m.cols; ++c) {
    for (int64_t r = 0; r < m.rows; ++r) {
      OrInto(packed.parts[0], (c / p) * m.rows + r, m.codes[r * m.cols + c], (c % p) * grids.bits);
    }
    PutInt(packed.parts[3], c, static_cast<int32_t>(m.group_of(c)));
  }
  const int64_t zero_words = CeilDiv(m.rows, p);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < m.rows; ++r) {
      const uint32_t stored = (static_cast<uint32_t>(m.zero(r, g)) - 1u) & mask;
      OrInto(packed.parts[1], g * zero_words + r / p, stored, (r % p) * grids.bits);
      PutFloat(packed.parts[2], g * m.rows + r, m.scale(r, g));
    }
  }
  return packed;
}

}  // namespace

absl::StatusOr<PackedTensor> PackQuantizedSafetensor(const SafetensorsEntry& entry,
                                                     const std::optional<WeightLayout>& layout,
                                                     absl::Span<const float> values,
                                                     const QuantGrids& grids, QuantLayout format) {
  if (format == QuantLayout::kGptq && grids.bits == 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", entry.name, "\": the gptq packed layout stores 2, 4 or 8 bits, not 3; "
        "use the compressed-tensors layout or another bit width"));
  }
  auto m = QuantizedCodes(entry.name, entry.shape, layout.value_or(WeightLayout{}), values, grids);
  if (!m.ok()) return m.status();
  PackedTensor packed =
      format == QuantLayout::kGptq ? GptqForm(entry, *m) : CompressedTensorsForm(entry, *m);
  json parts = json::object();
  for (const PackedPart& part : packed.parts) parts[part.suffix.substr(1)] = part.NameFor(entry.name);
  packed.description = json{{"name", entry.name},
                            {"shape", entry.shape},
                            {"dtype", entry.dtype_name},
                            {"encoding", format == QuantLayout::kGptq ? "gptq" : "pack-quantized"},
                            {"bits", grids.bits},
                            {"group_size", grids.group_columns},
                            {"symmetric", grids.symmetric},
                            {"parts", std::move(parts)}};
  return packed;
}

absl::StatusOr<json> QuantizationConfig(QuantLayout format,
                                        const std::vector<QuantizedTensorNote>& notes) {
  if (notes.empty()) return json();
  if (format == QuantLayout::kGptq) {
    const QuantizedTensorNote& first = notes.front();
    for (const QuantizedTensorNote& note : notes) {
      if (note.bits != first.bits || note.group_size != first.group_size ||
          note.symmetric != first.symmetric) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the gptq packed layout has one quantization setting per model, but tensor \"",
            note.name, "\" differs from \"", first.name,
            "\" in bits, group_size or symmetric; use the compressed-tensors layout"));
      }
    }
    return json{{"quant_method", "gptq"},
                {"bits", first.bits},
                {"group_size", first.group_size > 0 ? first.group_size : -1},
                {"sym", first.symmetric},
                {"desc_act", false},
                {"checkpoint_format", "gptq"}};
  }
  // Modules are named by their weight's name without ".weight".
  std::map<std::tuple<int, int64_t, bool>, std::vector<std::string>> by_setting;
  for (const QuantizedTensorNote& note : notes) {
    std::string module = note.name;
    if (absl::EndsWith(module, ".weight")) module.resize(module.size() - 7);
    by_setting[{note.bits, note.group_size, note.symmetric}].push_back(std::move(module));
  }
  json groups = json::object();
  int index = 0;
  for (const auto& [setting, modules] : by_setting) {
    const auto& [bits, group_size, symmetric] = setting;
    json weights = {{"num_bits", bits},
                    {"type", "int"},
                    {"symmetric", symmetric},
                    {"strategy", group_size > 0 ? "group" : "channel"},
                    {"group_size", group_size > 0 ? json(group_size) : json(nullptr)},
                    {"dynamic", false},
                    {"actorder", nullptr},
                    {"observer", "minmax"}};
    groups[absl::StrCat("group_", index++)] = json{{"targets", modules},
                                                   {"weights", std::move(weights)},
                                                   {"input_activations", nullptr},
                                                   {"output_activations", nullptr}};
  }
  return json{{"quant_method", "compressed-tensors"},
              {"format", "pack-quantized"},
              {"quantization_status", "compressed"},
              {"config_groups", std::move(groups)},
              {"ignore", json::array()}};
}

}  // namespace bonsai::formats
