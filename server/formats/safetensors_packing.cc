#include "server/formats/safetensors_packing.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/types/span.h"

namespace bonsai::formats {
namespace {

using json = nlohmann::json;

bool IsPositiveZero(const unsigned char* element, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    if (element[i] != 0) return false;
  }
  return true;
}

float DecodeOne(tensor::DType dtype, const unsigned char* element) {
  float value = 0.0f;
  (void)tensor::DecodeToFloat(dtype, element, 1, absl::MakeSpan(&value, 1));
  return value;
}

// True when `value` stored in `dtype` has exactly the bytes at `element`:
// the check that makes every encoding lossless.
bool EncodesTo(tensor::DType dtype, float value, const unsigned char* element) {
  unsigned char encoded[8];
  if (!tensor::EncodeFromFloat(dtype, absl::MakeConstSpan(&value, 1), encoded).ok()) return false;
  return std::memcmp(encoded, element, tensor::DTypeSize(dtype)) == 0;
}

uint64_t Product(const std::vector<int64_t>& shape, size_t from, size_t to) {
  uint64_t product = 1;
  for (size_t i = from; i < to; ++i) product *= static_cast<uint64_t>(shape[i]);
  return product;
}

PackedPart Part(std::string suffix, std::string dtype, std::vector<int64_t> shape,
                uint64_t bytes) {
  PackedPart part{std::move(suffix), std::move(dtype), std::move(shape), {}};
  part.bytes.assign(bytes, '\0');
  return part;
}

json Describe(const SafetensorsEntry& entry, const char* encoding) {
  return json{{"name", entry.name},
              {"shape", entry.shape},
              {"dtype", entry.dtype_name},
              {"encoding", encoding}};
}

void NameParts(const SafetensorsEntry& entry, PackedTensor& packed) {
  json parts = json::object();
  for (const PackedPart& part : packed.parts) {
    parts[part.suffix.substr(1)] = entry.name + part.suffix;
  }
  packed.description["parts"] = std::move(parts);
}

std::optional<PackedTensor> PackBitmask(const SafetensorsEntry& entry, const unsigned char* data) {
  const size_t width = entry.element_size;
  uint64_t nonzero = 0;
  for (uint64_t i = 0; i < entry.count; ++i) nonzero += !IsPositiveZero(data + i * width, width);
  const uint64_t mask_bytes = (entry.count + 7) / 8;
  if (mask_bytes + nonzero * width >= entry.count * width) return std::nullopt;

  PackedTensor packed{Describe(entry, "bitmask"), {}};
  packed.parts.push_back(Part(".bitmask", "U8", {static_cast<int64_t>(mask_bytes)}, mask_bytes));
  packed.parts.push_back(Part(".values", entry.dtype_name, {static_cast<int64_t>(nonzero)},
                              nonzero * width));
  auto* mask = reinterpret_cast<unsigned char*>(packed.parts[0].bytes.data());
  char* values = packed.parts[1].bytes.data();
  for (uint64_t i = 0; i < entry.count; ++i) {
    const unsigned char* element = data + i * width;
    if (IsPositiveZero(element, width)) continue;
    mask[i / 8] |= static_cast<unsigned char>(1u << (i % 8));
    std::memcpy(values, element, width);
    values += width;
  }
  NameParts(entry, packed);
  return packed;
}

std::optional<PackedTensor> PackNM(const SafetensorsEntry& entry, const unsigned char* data,
                                   const std::optional<WeightLayout>& layout, int n, int m) {
  const size_t rank = entry.shape.size();
  if (rank == 0 || n <= 0 || m > 256 || n >= m) return std::nullopt;
  const size_t axis = layout ? static_cast<size_t>(layout->reduction_axis) : rank - 1;
  if (axis >= rank) return std::nullopt;
  const uint64_t outer = Product(entry.shape, 0, axis);
  const uint64_t length = static_cast<uint64_t>(entry.shape[axis]);
  const uint64_t inner = Product(entry.shape, axis + 1, rank);
  const uint64_t groups = length / m, tail = length % m, rows = outer * inner;
  const size_t width = entry.element_size;
  const uint64_t kept = rows * groups * n;
  if (groups == 0 || kept * (width + 1) + rows * tail * width >= entry.count * width) {
    return std::nullopt;
  }

  PackedTensor packed{Describe(entry, "nm"), {}};
  packed.description["axis"] = axis;
  packed.description["n"] = n;
  packed.description["m"] = m;
  const std::vector<int64_t> group_shape = {static_cast<int64_t>(rows),
                                            static_cast<int64_t>(groups), n};
  packed.parts.push_back(Part(".values", entry.dtype_name, group_shape, kept * width));
  packed.parts.push_back(Part(".indices", "U8", group_shape, kept));
  if (tail > 0) {
    packed.parts.push_back(Part(".tail", entry.dtype_name,
                                {static_cast<int64_t>(rows), static_cast<int64_t>(tail)},
                                rows * tail * width));
  }
  char* values = packed.parts[0].bytes.data();
  auto* indices = reinterpret_cast<unsigned char*>(packed.parts[1].bytes.data());
  char* tail_out = tail > 0 ? packed.parts[2].bytes.data() : nullptr;
  std::vector<unsigned char> slots;
  slots.reserve(m);
  for (uint64_t row = 0; row < rows; ++row) {
    const uint64_t a = row / inner, b = row % inner;
    auto element = [&](uint64_t k) { return data + ((a * length + k) * inner + b) * width; };
    for (uint64_t g = 0; g < groups; ++g) {
      slots.clear();
      for (int j = 0; j < m; ++j) {
        if (!IsPositiveZero(element(g * m + j), width)) slots.push_back(static_cast<unsigned char>(j));
      }
      if (slots.size() > static_cast<size_t>(n)) return std::nullopt;  // not n:m
      // Pad with positions holding +0.0 so every group has exactly n slots.
      for (int j = 0; j < m && slots.size() < static_cast<size_t>(n); ++j) {
        if (IsPositiveZero(element(g * m + j), width)) slots.push_back(static_cast<unsigned char>(j));
      }
      std::sort(slots.begin(), slots.end());
      for (unsigned char slot : slots) {
        std::memcpy(values, element(g * m + slot), width);
        values += width;
        *indices++ = slot;
      }
    }
    for (uint64_t k = groups * m; k < length; ++k) {
      std::memcpy(tail_out, element(k), width);
      tail_out += width;
    }
  }
  NameParts(entry, packed);
  return packed;
}

// Binary and ternary share their channel bookkeeping: one scale per output
// channel, taken from the stored values themselves so the packing is exact
// whatever scales the method reported.
struct Channels {
  int axis = -1;  // -1: the whole tensor is one channel
  uint64_t count = 1, inner = 1;
  uint64_t Of(uint64_t i) const { return axis < 0 ? 0 : (i / inner) % count; }
};

Channels ChannelsOf(const SafetensorsEntry& entry, const std::optional<WeightLayout>& layout) {
  Channels channels;
  if (layout && static_cast<size_t>(layout->output_axis) < entry.shape.size()) {
    channels.axis = layout->output_axis;
    channels.count = static_cast<uint64_t>(entry.shape[channels.axis]);
    channels.inner = Product(entry.shape, channels.axis + 1, entry.shape.size());
  }
  return channels;
}

std::optional<PackedTensor> PackSigns(const SafetensorsEntry& entry, const unsigned char* data,
                                      const std::optional<WeightLayout>& layout, bool ternary) {
  const Channels channels = ChannelsOf(entry, layout);
  const size_t width = entry.element_size;
  const uint64_t per_byte = ternary ? 4 : 8;
  const uint64_t code_bytes = (entry.count + per_byte - 1) / per_byte;
  if (code_bytes + channels.count * 4 >= entry.count * width) return std::nullopt;

  PackedTensor packed{Describe(entry, ternary ? "ternary" : "binary"), {}};
  packed.description["axis"] = channels.axis;
  packed.parts.push_back(Part(ternary ? ".codes" : ".signs", "U8",
                              {static_cast<int64_t>(code_bytes)}, code_bytes));
  packed.parts.push_back(Part(".scales", "F32", {static_cast<int64_t>(channels.count)},
                              channels.count * 4));
  auto* codes = reinterpret_cast<unsigned char*>(packed.parts[0].bytes.data());
  std::vector<float> scales(channels.count, 0.0f);
  std::vector<bool> known(channels.count, false);
  const unsigned bits = ternary ? 2 : 1;
  for (uint64_t i = 0; i < entry.count; ++i) {
    const unsigned char* element = data + i * width;
    const float value = DecodeOne(entry.dtype, element);
    const bool negative = std::signbit(value);
    unsigned code = negative ? 1 : 0;  // binary: the sign bit
    float expected;
    if (ternary && value == 0.0f) {
      code = negative ? 3 : 0;
      expected = negative ? -0.0f : 0.0f;
    } else {
      const uint64_t c = channels.Of(i);
      if (!known[c]) {
        scales[c] = std::fabs(value);
        known[c] = true;
      }
      expected = negative ? -scales[c] : scales[c];
      if (ternary) code = negative ? 2 : 1;
    }
    if (!EncodesTo(entry.dtype, expected, element)) return std::nullopt;
    codes[i * bits / 8] |= static_cast<unsigned char>(code << (i * bits % 8));
  }
  std::memcpy(packed.parts[1].bytes.data(), scales.data(), channels.count * 4);
  NameParts(entry, packed);
  return packed;
}

}  // namespace

uint64_t PackedTensor::stored_bytes() const {
  uint64_t total = 0;
  for (const PackedPart& part : parts) total += part.bytes.size();
  return total;
}

std::optional<PackedTensor> PackSafetensor(const SafetensorsEntry& entry,
                                           const unsigned char* data,
                                           const std::optional<WeightLayout>& layout,
                                           const PackingHint& hint) {
  if (!tensor::IsFloating(entry.dtype) || entry.count == 0) return std::nullopt;
  switch (hint.packing) {
    case Packing::kDense:
      return std::nullopt;
    case Packing::kSparseBitmask:
      return PackBitmask(entry, data);
    case Packing::kNM:
      return PackNM(entry, data, layout, hint.n, hint.m);
    case Packing::kBinary:
      return PackSigns(entry, data, layout, /*ternary=*/false);
    case Packing::kTernary:
      return PackSigns(entry, data, layout, /*ternary=*/true);
    case Packing::kQuantized:  // packed at Write, from the float values (safetensors_quantized.h)
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace bonsai::formats
