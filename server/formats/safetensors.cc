#include "server/formats/safetensors.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/formats/safetensors_packing.h"

namespace bonsai::formats {
namespace {

using json = nlohmann::json;

TensorInfo InfoOf(const SafetensorsEntry& entry) {
  TensorInfo info;
  info.name = entry.name;
  info.shape = entry.shape;
  info.dtype = entry.dtype;
  info.params = entry.count;
  if (tensor::IsFloating(entry.dtype) && entry.shape.size() >= 2) {
    info.layout = WeightLayout{0, 1};  // PyTorch stores [out, in, ...]
    info.selected_by_default = entry.count > 0 && !IsEmbeddingName(entry.name);
  }
  return info;
}

json EntryJson(const std::string& dtype, const std::vector<int64_t>& shape, uint64_t begin,
               uint64_t size) {
  return json{{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, begin + size}}};
}

}  // namespace

bool IsEmbeddingName(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  for (std::string_view marker : {"embed", "wte", "wpe", "lm_head"}) {
    if (lower.find(marker) != std::string::npos) return true;
  }
  return false;
}

SafetensorsModel::SafetensorsModel(std::string bytes, SafetensorsHeader header)
    : bytes_(std::move(bytes)), header_(std::move(header)) {
  infos_.reserve(header_.entries.size());
  for (const SafetensorsEntry& entry : header_.entries) infos_.push_back(InfoOf(entry));
  hints_.resize(infos_.size());
}

absl::Status SafetensorsModel::CheckUsable(size_t index) const {
  if (auto status = CheckTensorAccess(consumed_, index, infos_.size()); !status.ok()) {
    return status;
  }
  if (!tensor::IsFloating(infos_[index].dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", infos_[index].name, "\" has dtype ", header_.entries[index].dtype_name,
        "; only F32, F16, BF16 and F64 tensors can be compressed"));
  }
  return absl::OkStatus();
}

const unsigned char* SafetensorsModel::TensorData(size_t index) const {
  return reinterpret_cast<const unsigned char*>(bytes_.data()) + header_.data_start +
         header_.entries[index].begin;
}

unsigned char* SafetensorsModel::TensorData(size_t index) {
  return reinterpret_cast<unsigned char*>(bytes_.data()) + header_.data_start +
         header_.entries[index].begin;
}

absl::Status SafetensorsModel::ReadInto(size_t index, tensor::FloatTensor& out) const {
  if (auto status = CheckUsable(index); !status.ok()) return status;
  const SafetensorsEntry& entry = header_.entries[index];
  out.shape = entry.shape;
  out.values.resize(entry.count);  // bounded: the span was checked against the file
  return tensor::DecodeToFloat(entry.dtype, TensorData(index), entry.count, out.span());
}

// Decodes the stored tensor a slice at a time into a small buffer: the
// original stays in the file bytes until Write, so no copy is needed.
absl::StatusOr<tensor::ChangeStats> SafetensorsModel::CompareWithStored(
    size_t index, absl::Span<const float> after) const {
  if (auto status = CheckUsable(index); !status.ok()) return status;
  const SafetensorsEntry& entry = header_.entries[index];
  if (after.size() != entry.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", entry.name, "\" has ", entry.count, " values, not ", after.size()));
  }
  constexpr size_t kSlice = 4096;
  std::vector<float> slice(kSlice);
  const size_t width = tensor::DTypeSize(entry.dtype);
  tensor::ChangeAccumulator change;
  for (size_t first = 0; first < after.size(); first += kSlice) {
    const size_t length = std::min(kSlice, after.size() - first);
    if (auto status = tensor::DecodeToFloat(entry.dtype, TensorData(index) + first * width, length,
                                            absl::MakeSpan(slice).subspan(0, length));
        !status.ok()) {
      return status;
    }
    change.Add(absl::MakeConstSpan(slice).subspan(0, length), after.subspan(first, length));
  }
  return change.stats();
}

absl::Status SafetensorsModel::Write(size_t index, const tensor::FloatTensor& values,
                                     const PackingHint& packing) {
  if (auto status = CheckUsable(index); !status.ok()) return status;
  const SafetensorsEntry& entry = header_.entries[index];
  if (values.shape != entry.shape || values.size() != entry.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Write to tensor \"", entry.name, "\" must keep its shape and element count"));
  }
  hints_[index] = packing;
  // Only changed elements are re-encoded, so kept F64 values stay exact.
  return tensor::EncodeChangedFromFloat(entry.dtype, values.span(), TensorData(index));
}

absl::StatusOr<std::string> SafetensorsModel::Serialize(const SerializeOptions& options) {
  if (consumed_) return absl::FailedPreconditionError("the model was already serialized");
  stored_.clear();
  for (const SafetensorsEntry& entry : header_.entries) {
    stored_.push_back({entry.end - entry.begin, entry.end - entry.begin});
  }
  consumed_ = true;
  if (!options.packed) return std::move(bytes_);
  return SerializePacked();
}

// Packs in place: tensors are rewritten in data order towards the front of
// the data area (a packed tensor is never larger than its dense span, so the
// write position never passes the read position), then the data is moved
// behind the new header. Peak memory is the model plus one packed tensor.
absl::StatusOr<std::string> SafetensorsModel::SerializePacked() {
  const auto& entries = header_.entries;
  absl::flat_hash_set<std::string> names;
  for (const SafetensorsEntry& entry : entries) names.insert(entry.name);

  // Pass 1 decides, so that a model where nothing packs comes back exactly
  // as the dense output.
  std::vector<bool> packs(entries.size(), false);
  bool any = false;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (hints_[i].packing == Packing::kDense) continue;
    auto packed = PackSafetensor(entries[i], TensorData(i), infos_[i].layout, hints_[i]);
    if (!packed) continue;
    bool clash = false;
    for (const PackedPart& part : packed->parts) clash |= names.contains(entries[i].name + part.suffix);
    if (clash) continue;
    for (const PackedPart& part : packed->parts) names.insert(entries[i].name + part.suffix);
    packs[i] = any = true;
  }
  if (!any) return std::move(bytes_);

  json header = json::object();
  json metadata = header_.metadata.is_object() ? header_.metadata : json::object();
  metadata["bonsai.packing"] = "1";
  char* area = bytes_.data() + header_.data_start;
  uint64_t written = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const SafetensorsEntry& entry = entries[i];
    const uint64_t dense = entry.end - entry.begin;
    if (!packs[i]) {
      std::memmove(area + written, area + entry.begin, dense);
      header[entry.name] = EntryJson(entry.dtype_name, entry.shape, written, dense);
      written += dense;
      continue;
    }
    auto packed = PackSafetensor(entry, TensorData(i), infos_[i].layout, hints_[i]);
    if (!packed) return absl::InternalError("packing changed between passes");
    for (const PackedPart& part : packed->parts) {
      std::memcpy(area + written, part.bytes.data(), part.bytes.size());
      header[entry.name + part.suffix] = EntryJson(part.dtype, part.shape, written, part.bytes.size());
      written += part.bytes.size();
    }
    metadata["bonsai.packed." + entry.name] = packed->description.dump();
    stored_[i].stored_bytes = packed->stored_bytes();
  }
  header["__metadata__"] = std::move(metadata);

  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');  // data 8-byte aligned, as the reference does
  const uint64_t data_start = 8 + text.size();
  const uint64_t total = data_start + written;
  if (total > bytes_.size()) bytes_.resize(total);
  std::memmove(bytes_.data() + data_start, bytes_.data() + header_.data_start, written);
  for (int i = 0; i < 8; ++i) bytes_[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  std::memcpy(bytes_.data() + 8, text.data(), text.size());
  bytes_.resize(total);
  return std::move(bytes_);
}

absl::StatusOr<std::unique_ptr<Model>> ParseSafetensors(std::string bytes) {
  auto header = ParseSafetensorsHeader(bytes);
  if (!header.ok()) return header.status();
  return std::make_unique<SafetensorsModel>(std::move(bytes), *std::move(header));
}

}  // namespace bonsai::formats
