#include "server/formats/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/tensor/float_tensor.h"

namespace bonsai::formats {
namespace {

using json = nlohmann::json;

// Every error ends with the same remedy: a file written by the reference
// implementation never trips these checks.
absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid safetensors file: ", what,
      ". Re-save the model with safetensors (safetensors.torch.save_file) "
      "and upload the complete file"));
}

uint64_t ReadLength(std::string_view file) {
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) {
    length = (length << 8) | static_cast<unsigned char>(file[i]);
  }
  return length;
}

// A JSON number that is a non-negative integer (nlohmann keeps large or
// fractional values as other number kinds, which are refused).
bool AsUnsigned(const json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

absl::StatusOr<std::vector<int64_t>> ParseShape(const std::string& name,
                                                const json& shape) {
  if (!shape.is_array()) {
    return Invalid(absl::StrCat("tensor \"", name, "\": \"shape\" must be an array of integers"));
  }
  std::vector<int64_t> dims;
  dims.reserve(std::min<size_t>(shape.size(), 64));
  for (const json& dim : shape) {
    if (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() < 0) {
      return Invalid(absl::StrCat("tensor \"", name, "\" has a negative dimension (",
                                  dim.get<int64_t>(), ")"));
    }
    uint64_t value = 0;
    if (!AsUnsigned(dim, &value) ||
        value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(absl::StrCat("tensor \"", name, "\": shape entry ", dim.dump(),
                                  " is not a non-negative integer"));
    }
    dims.push_back(static_cast<int64_t>(value));
  }
  return dims;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& name, const json& value,
                                            uint64_t data_size) {
  if (!value.is_object()) {
    return Invalid(absl::StrCat("entry \"", name, "\" must be an object with dtype, shape and data_offsets"));
  }
  SafetensorsEntry entry;
  entry.name = name;
  const auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) {
    return Invalid(absl::StrCat("tensor \"", name, "\" has no \"dtype\" string"));
  }
  entry.dtype_name = dtype->get<std::string>();
  entry.element_size = SafetensorsElementSize(entry.dtype_name);
  if (entry.element_size == 0) {
    return Invalid(absl::StrCat(
        "tensor \"", name, "\" has unknown dtype \"", entry.dtype_name,
        "\" (known: F64 F32 F16 BF16 F8_E4M3 F8_E5M2 I64 I32 I16 I8 U64 U32 U16 U8 BOOL)"));
  }
  entry.dtype = DTypeFromSafetensors(entry.dtype_name);

  const auto shape = value.find("shape");
  if (shape == value.end()) return Invalid(absl::StrCat("tensor \"", name, "\" has no \"shape\""));
  auto dims = ParseShape(name, *shape);
  if (!dims.ok()) return dims.status();
  entry.shape = *std::move(dims);
  if (!tensor::ElementCount(entry.shape, &entry.count) ||
      entry.count > std::numeric_limits<uint64_t>::max() / entry.element_size) {
    return Invalid(absl::StrCat("tensor \"", name, "\" has a shape whose size overflows"));
  }

  const auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
      !AsUnsigned((*offsets)[0], &entry.begin) || !AsUnsigned((*offsets)[1], &entry.end)) {
    return Invalid(absl::StrCat("tensor \"", name,
                                "\" needs \"data_offsets\": [begin, end] of non-negative integers"));
  }
  if (entry.begin > entry.end) {
    return Invalid(absl::StrCat("tensor \"", name, "\" has data_offsets begin ", entry.begin,
                                " after end ", entry.end));
  }
  if (entry.end > data_size) {
    return Invalid(absl::StrCat("tensor \"", name, "\" has data_offsets [", entry.begin, ", ",
                                entry.end, "] outside the data area of ", data_size,
                                " bytes (is the file truncated?)"));
  }
  const uint64_t bytes = entry.count * entry.element_size;
  if (entry.end - entry.begin != bytes) {
    return Invalid(absl::StrCat("tensor \"", name, "\" of shape ", shape->dump(), " and dtype ",
                                entry.dtype_name, " needs ", bytes, " bytes but its data_offsets span ",
                                entry.end - entry.begin));
  }
  return entry;
}

absl::Status CheckNoOverlap(const std::vector<SafetensorsEntry>& entries) {
  uint64_t covered_to = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& entry : entries) {
    if (entry.begin == entry.end) continue;  // empty tensors occupy nothing
    if (previous != nullptr && entry.begin < covered_to) {
      return Invalid(absl::StrCat("tensors \"", previous->name, "\" and \"", entry.name,
                                  "\" have overlapping data_offsets"));
    }
    covered_to = entry.end;
    previous = &entry;
  }
  return absl::OkStatus();
}

}  // namespace

size_t SafetensorsElementSize(std::string_view name) {
  if (name == "F64" || name == "I64" || name == "U64") return 8;
  if (name == "F32" || name == "I32" || name == "U32") return 4;
  if (name == "F16" || name == "BF16" || name == "I16" || name == "U16") return 2;
  if (name == "U8" || name == "I8" || name == "BOOL" || name == "F8_E4M3" ||
      name == "F8_E5M2") {
    return 1;
  }
  return 0;
}

tensor::DType DTypeFromSafetensors(std::string_view name) {
  if (name == "F32") return tensor::DType::kF32;
  if (name == "F16") return tensor::DType::kF16;
  if (name == "BF16") return tensor::DType::kBF16;
  if (name == "F64") return tensor::DType::kF64;
  return tensor::DType::kOther;
}

bool LooksLikeSafetensors(std::string_view file) {
  return file.size() >= 9 && file[8] == '{';
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view file) {
  return ParseSafetensorsHeader(file, file.size());
}

absl::StatusOr<uint64_t> SafetensorsHeaderLength(std::string_view first8, uint64_t file_size) {
  if (file_size < 8 || first8.size() < 8) {
    return Invalid(absl::StrCat("the file is ", file_size,
                                " bytes, shorter than the 8-byte header length"));
  }
  const uint64_t length = ReadLength(first8);
  if (length > kMaxSafetensorsHeaderBytes) {
    return Invalid(absl::StrCat("the header length is ", length, " bytes, above the limit of ",
                                kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (length > file_size - 8) {
    return Invalid(absl::StrCat("the header length is ", length, " bytes but only ",
                                file_size - 8, " bytes follow (the file is truncated)"));
  }
  return length;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view file,
                                                         uint64_t file_size) {
  auto header_length = SafetensorsHeaderLength(file, file_size);
  if (!header_length.ok()) return header_length.status();
  const uint64_t length = *header_length;
  if (length > file.size() - 8) {
    return Invalid(absl::StrCat("the header length is ", length, " bytes but only ",
                                file.size() - 8, " bytes of it were sent"));
  }
  SafetensorsHeader header;
  header.data_start = 8 + length;
  const uint64_t data_size = file_size - header.data_start;

  // nlohmann keeps the last of duplicate keys silently; a duplicate tensor
  // name makes the file ambiguous, so the parser callback watches for one.
  absl::flat_hash_set<std::string> names;
  std::string duplicate;
  const std::string_view text = file.substr(8, length);
  json root = json::parse(
      text.begin(), text.end(),
      [&](int depth, json::parse_event_t event, json& parsed) {
        if (depth == 1 && event == json::parse_event_t::key && parsed.is_string() &&
            !names.insert(parsed.get<std::string>()).second && duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        return true;
      },
      /*allow_exceptions=*/false);
  if (root.is_discarded()) return Invalid("the header is not valid JSON");
  if (!root.is_object()) return Invalid("the header must be a JSON object");
  if (!duplicate.empty()) {
    return Invalid(absl::StrCat("the tensor name \"", duplicate, "\" appears twice in the header"));
  }

  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return Invalid("\"__metadata__\" must be an object of strings");
      for (const auto& [key, item] : value.items()) {
        if (!item.is_string()) {
          return Invalid(absl::StrCat("\"__metadata__\" entry \"", key, "\" must be a string"));
        }
      }
      header.metadata = value;
      continue;
    }
    auto entry = ParseEntry(name, value, data_size);
    if (!entry.ok()) return entry.status();
    header.entries.push_back(*std::move(entry));
  }
  std::sort(header.entries.begin(), header.entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.name < b.name;
            });
  if (auto status = CheckNoOverlap(header.entries); !status.ok()) return status;
  return header;
}

}  // namespace bonsai::formats
