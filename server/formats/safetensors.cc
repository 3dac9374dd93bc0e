#include "server/formats/safetensors.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/formats/safetensors_packing.h"
#include "server/storage/allocator_tuning.h"
#include "server/tensor/run_in_parallel.h"

namespace bonsai::formats {
namespace {

using json = nlohmann::json;

TensorInfo InfoOf(const SafetensorsEntry& entry, const std::string& file) {
  TensorInfo info;
  info.name = entry.name;
  info.shape = entry.shape;
  info.dtype = entry.dtype;
  info.params = entry.count;
  info.file = file;
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

void MarkOutputHeads(std::vector<TensorInfo>& tensors) {
  static constexpr std::string_view kHeadNames[] = {"lm_head", "classifier", "score", "head"};
  bool named = false;
  for (TensorInfo& info : tensors) {
    info.output_head = false;
    if (!info.layout) continue;
    for (absl::string_view component : absl::StrSplit(info.name, '.')) {
      const std::string_view part(component.data(), component.size());
      if (std::find(std::begin(kHeadNames), std::end(kHeadNames), part) !=
          std::end(kHeadNames)) {
        info.output_head = true;
      }
    }
    named |= info.output_head;
  }
  if (named) return;
  // No head by name: the last weight matrix in the index's order, which is
  // the output layer of a plain network saved from PyTorch (fc1, fc2, fc3).
  // A lone weight is no network with a head: it is what the job is for.
  const auto layers = std::count_if(tensors.begin(), tensors.end(),
                                    [](const TensorInfo& info) { return info.selected_by_default; });
  if (layers < 2) return;
  for (auto it = tensors.rbegin(); it != tensors.rend(); ++it) {
    if (it->selected_by_default) {
      it->output_head = true;
      return;
    }
  }
}

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::Open(InputFile input) {
  char first8[8];
  if (input.size() < 8) return SafetensorsHeaderLength("", input.size()).status();
  if (auto status = input.ReadAt(0, absl::MakeSpan(first8, 8)); !status.ok()) return status;
  auto length = SafetensorsHeaderLength(std::string_view(first8, 8), input.size());
  if (!length.ok()) return length.status();
  std::string head(8 + *length, '\0');
  if (auto status = input.ReadAt(0, absl::MakeSpan(head.data(), head.size())); !status.ok()) {
    return status;
  }
  auto header = ParseSafetensorsHeader(head, input.size());
  if (!header.ok()) return header.status();
  return std::unique_ptr<SafetensorsModel>(
      new SafetensorsModel(std::move(input), *std::move(header)));
}

SafetensorsModel::SafetensorsModel(InputFile input, SafetensorsHeader header)
    : input_(std::move(input)), header_(std::move(header)) {
  infos_.reserve(header_.entries.size());
  for (const SafetensorsEntry& entry : header_.entries) {
    infos_.push_back(InfoOf(entry, input_.name()));
  }
  MarkOutputHeads(infos_);
  hints_.resize(infos_.size());
  held_.resize(infos_.size());
  packed_.resize(infos_.size());
  for (const SafetensorsEntry& entry : header_.entries) {
    stored_.push_back({entry.end - entry.begin, entry.end - entry.begin});
  }
}

uint64_t SafetensorsModel::largest_tensor_bytes() const {
  uint64_t largest = 0;
  for (const SafetensorsEntry& entry : header_.entries) {
    largest = std::max(largest, entry.end - entry.begin);
  }
  return largest;
}

absl::Status SafetensorsModel::CheckUsable(size_t index) const {
  if (auto status = CheckTensorAccess(finished_, index, infos_.size()); !status.ok()) {
    return status;
  }
  if (!tensor::IsFloating(infos_[index].dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", infos_[index].name, "\" has dtype ", header_.entries[index].dtype_name,
        "; only F32, F16, BF16 and F64 tensors can be compressed"));
  }
  return absl::OkStatus();
}

absl::Status SafetensorsModel::LoadRaw(size_t index) const {
  if (raw_index_ == static_cast<int64_t>(index)) return absl::OkStatus();
  const SafetensorsEntry& entry = header_.entries[index];
  raw_index_ = -1;
  storage::ResizeForOverwrite(raw_, entry.end - entry.begin);
  if (held_[index]) {  // written before output started: its bytes wait in the scratch file
    if (auto status = held_bytes_->ReadAt(held_[index]->offset, absl::MakeSpan(raw_.data(), raw_.size()));
        !status.ok()) {
      return status;
    }
  } else if (auto status = input_.ReadAt(FileOffset(index), absl::MakeSpan(raw_.data(), raw_.size()));
             !status.ok()) {
    return status;
  }
  raw_index_ = static_cast<int64_t>(index);
  return absl::OkStatus();
}

absl::Status SafetensorsModel::ReadInto(size_t index, tensor::FloatTensor& out) const {
  if (auto status = CheckUsable(index); !status.ok()) return status;
  const SafetensorsEntry& entry = header_.entries[index];
  out.shape = entry.shape;
  storage::ResizeForOverwrite(out.values, entry.count);  // bounded: the span was checked against the file
  if (entry.dtype == tensor::DType::kF32 && raw_index_ != static_cast<int64_t>(index) &&
      !held_[index]) {
    return ReadFloatsInPlace(index, out);
  }
  if (auto status = LoadRaw(index); !status.ok()) return status;
  return tensor::DecodeToFloat(entry.dtype, raw_.data(), entry.count, out.span());
}

// Stored F32 is the floats themselves (safetensors is little-endian, like
// every host we build for), so they are read straight into the tensor: one
// copy where LoadRaw + decode makes two. Observation passes read every
// weight once more after the upload, and this copy is most of their time, so
// a big tensor is read in two halves on two cores when one is free. raw_ is
// left as it was: the apply path's CompareWithStored reads the stored bytes
// itself.
absl::Status SafetensorsModel::ReadFloatsInPlace(size_t index, tensor::FloatTensor& out) const {
  const uint64_t offset = FileOffset(index);
  const size_t bytes = out.values.size() * sizeof(float);
  char* into = reinterpret_cast<char*>(out.values.data());
  const size_t half = bytes / 2 / sizeof(float) * sizeof(float);
  // Both halves are there before a core is borrowed: a lent core never
  // waits for the upload. (When they never come, ReadAt says why.)
  if (!input_.WaitFor(offset + bytes).ok()) return input_.ReadAt(offset, absl::MakeSpan(into, bytes));
  absl::Status first, second;
  tensor::RunInParallel(
      out.values.size() >= tensor::kWorthASecondCore,
      [&] { first = input_.ReadAt(offset, absl::MakeSpan(into, half)); },
      [&] { second = input_.ReadAt(offset + half, absl::MakeSpan(into + half, bytes - half)); });
  return first.ok() ? second : first;
}

// Decodes the stored tensor a slice at a time into a small buffer: the
// stored bytes are still in raw_ from the read, so no copy is needed.
absl::StatusOr<tensor::ChangeStats> SafetensorsModel::CompareWithStored(
    size_t index, absl::Span<const float> after) const {
  if (auto status = CheckUsable(index); !status.ok()) return status;
  const SafetensorsEntry& entry = header_.entries[index];
  if (after.size() != entry.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", entry.name, "\" has ", entry.count, " values, not ", after.size()));
  }
  if (auto status = LoadRaw(index); !status.ok()) return status;
  constexpr size_t kSlice = 4096;
  std::vector<float> slice(kSlice);
  const size_t width = tensor::DTypeSize(entry.dtype);
  tensor::ChangeAccumulator change;
  for (size_t first = 0; first < after.size(); first += kSlice) {
    const size_t length = std::min(kSlice, after.size() - first);
    if (auto status = tensor::DecodeToFloat(entry.dtype, raw_.data() + first * width, length,
                                            absl::MakeSpan(slice).subspan(0, length));
        !status.ok()) {
      return status;
    }
    change.Add(absl::MakeConstSpan(slice).subspan(0, length), after.subspan(first, length));
  }
  return change.stats();
}

absl::StatusOr<std::shared_ptr<storage::SpoolFile>> SafetensorsModel::HeldBytes() {
  if (held_bytes_) return held_bytes_;
  auto file = sink_ != nullptr ? sink_->Scratch(input_.name() + " (held tensors)")
                               : storage::SpoolFile::CreateInMemory(input_.name());
  if (!file.ok()) return file.status();
  held_bytes_ = *file;
  return held_bytes_;
}

absl::Status SafetensorsModel::EnsureFileStarted() {
  if (writer_ != nullptr) return absl::OkStatus();
  auto writer = sink_->BeginFile(input_.index(), "model");
  if (!writer.ok()) return writer.status();
  writer_ = *writer;
  return absl::OkStatus();
}

absl::Status SafetensorsModel::EmitInputUpTo(uint64_t file_offset) {
  if (file_offset <= emitted_) return absl::OkStatus();
  // Waits for the bytes if they are still uploading (CopyFrom reads what is there).
  if (auto status = input_.WaitFor(file_offset); !status.ok()) return status;
  if (auto status = writer_->CopyFrom(input_.data(), emitted_, file_offset - emitted_);
      !status.ok()) {
    return status;
  }
  emitted_ = file_offset;
  return absl::OkStatus();
}

absl::Status SafetensorsModel::Write(size_t index, const tensor::FloatTensor& values,
                                     const PackingHint& packing) {
  if (auto status = CheckUsable(index); !status.ok()) return status;
  const SafetensorsEntry& entry = header_.entries[index];
  if (values.shape != entry.shape || values.size() != entry.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Write to tensor \"", entry.name, "\" must keep its shape and element count"));
  }
  if (sink_ != nullptr && options_.packed && packing.packing == Packing::kQuantized) {
    return PackQuantized(index, values, packing);
  }
  if (auto status = LoadRaw(index); !status.ok()) return status;
  hints_[index] = packing;
  // Only changed elements are re-encoded, so kept F64 values stay exact. A
  // quantized tensor is re-encoded whole: an F64 weight whose float32
  // rounding already sat on its grid would otherwise keep its off-grid
  // original, and the dense output would differ from the packed one.
  auto* out = reinterpret_cast<unsigned char*>(raw_.data());
  if (auto status = packing.packing == Packing::kQuantized
                        ? tensor::EncodeFromFloat(entry.dtype, values.span(), out)
                        : tensor::EncodeChangedFromFloat(entry.dtype, values.span(), out);
      !status.ok()) {
    return status;
  }
  raw_index_ = -1;  // raw_ now holds the new bytes, not the stored ones
  const bool streams = sink_ != nullptr && !options_.packed && FileOffset(index) >= emitted_;
  if (streams) {
    if (auto status = EnsureFileStarted(); !status.ok()) return status;
    if (auto status = EmitInputUpTo(FileOffset(index)); !status.ok()) return status;
    if (auto status = writer_->Write(raw_); !status.ok()) return status;
    emitted_ = FileOffset(index) + raw_.size();
    return absl::OkStatus();
  }
  auto held = HeldBytes();
  if (!held.ok()) return held.status();
  held_[index] = Held{(*held)->size(), raw_.size()};
  return (*held)->Append(raw_);
}

absl::Status SafetensorsModel::StartOutput(const SerializeOptions& options, OutputSink& sink) {
  if (sink_ != nullptr || finished_) {
    return absl::FailedPreconditionError("output of this model was already started");
  }
  options_ = options;
  sink_ = &sink;
  return absl::OkStatus();
}

absl::Status SafetensorsModel::FinishOutput() {
  if (sink_ == nullptr) return absl::FailedPreconditionError("StartOutput was not called");
  if (finished_) return absl::FailedPreconditionError("the output was already finished");
  absl::Status status = options_.packed ? FinishPacked() : FinishDense();
  finished_ = true;
  raw_.clear();
  raw_.shrink_to_fit();
  return status;
}

absl::Status SafetensorsModel::FinishDense() {
  if (auto status = EnsureFileStarted(); !status.ok()) return status;
  output_entries_.clear();
  for (size_t i = 0; i < header_.entries.size(); ++i) {
    const SafetensorsEntry& entry = header_.entries[i];
    output_entries_.emplace_back(entry.name, entry.end - entry.begin);
    if (!held_[i] || FileOffset(i) < emitted_) continue;
    if (auto status = EmitInputUpTo(FileOffset(i)); !status.ok()) return status;
    if (auto status = writer_->CopyFrom(*held_bytes_, held_[i]->offset, held_[i]->length);
        !status.ok()) {
      return status;
    }
    emitted_ = FileOffset(i) + held_[i]->length;
  }
  if (auto status = EmitInputUpTo(input_.size()); !status.ok()) return status;
  return sink_->EndFile();
}

// Packs tensor by tensor into a second scratch file, then writes the new
// header and the data behind it. A model where nothing packs comes back
// exactly as the dense output. Peak memory is one tensor and its packed form.
absl::Status SafetensorsModel::SpoolPacked(size_t index, const PackedTensor& form) {
  if (!packed_bytes_) {
    auto file = sink_->Scratch(input_.name() + " (packed tensors)");
    if (!file.ok()) return file.status();
    packed_bytes_ = *file;
  }
  Spooled result;
  result.description = form.description;
  for (const PackedPart& part : form.parts) {
    result.parts.push_back({part.NameFor(header_.entries[index].name), part.dtype, part.shape,
                            packed_bytes_->size(), part.bytes.size()});
    if (auto status = packed_bytes_->Append(part.bytes); !status.ok()) return status;
  }
  stored_[index].stored_bytes = form.stored_bytes();
  packed_[index] = std::move(result);
  return absl::OkStatus();
}

// A quantized tensor is packed as it is written: its codes come from the
// float values (the stored dtype may have rounded them away), and holding
// the dense bytes too would double the spool.
absl::Status SafetensorsModel::PackQuantized(size_t index, const tensor::FloatTensor& values,
                                             const PackingHint& packing) {
  const SafetensorsEntry& entry = header_.entries[index];
  auto form = PackQuantizedSafetensor(entry, infos_[index].layout, values.span(), *packing.quant,
                                      options_.quant_layout);
  if (!form.ok()) return form.status();
  for (const PackedPart& part : form->parts) {
    const std::string name = part.NameFor(entry.name);
    for (const SafetensorsEntry& other : header_.entries) {
      if (other.name == name) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor \"", entry.name, "\" cannot be stored packed: its packed part \"", name,
            "\" would clash with a tensor of the same name; ask for output dense"));
      }
    }
  }
  hints_[index] = packing;
  // The group size as requested: a group wider than the row is the whole row
  // in every reader's arithmetic (ceil(cols / group_size) groups).
  quantized_notes_.push_back({entry.name, packing.quant->bits,
                              std::max<int64_t>(packing.quant->group_size, 0),
                              packing.quant->symmetric});
  return SpoolPacked(index, *form);
}

// Packs tensor by tensor into a second scratch file, then writes the new
// header and the data behind it. A model where nothing packs comes back
// exactly as the dense output. Peak memory is one tensor and its packed form.
absl::Status SafetensorsModel::FinishPacked() {
  const auto& entries = header_.entries;
  absl::flat_hash_set<std::string> names;
  for (const SafetensorsEntry& entry : entries) names.insert(entry.name);
  for (const auto& spooled : packed_) {
    if (!spooled) continue;
    for (const SpooledPart& part : spooled->parts) names.insert(part.name);
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    if (packed_[i] || !held_[i] || hints_[i].packing == Packing::kDense) continue;
    std::string dense(held_[i]->length, '\0');
    if (auto status = held_bytes_->ReadAt(held_[i]->offset, absl::MakeSpan(dense.data(), dense.size()));
        !status.ok()) {
      return status;
    }
    auto form = PackSafetensor(entries[i], reinterpret_cast<const unsigned char*>(dense.data()),
                               infos_[i].layout, hints_[i]);
    if (!form) continue;
    bool clash = false;
    for (const PackedPart& part : form->parts) clash |= names.contains(part.NameFor(entries[i].name));
    if (clash) continue;
    for (const PackedPart& part : form->parts) names.insert(part.NameFor(entries[i].name));
    if (auto status = SpoolPacked(i, *form); !status.ok()) return status;
  }
  if (!packed_bytes_) return FinishDense();

  json header = json::object();
  json metadata = header_.metadata.is_object() ? header_.metadata : json::object();
  metadata["bonsai.packing"] = "1";
  if (!quantized_notes_.empty()) {
    auto config = QuantizationConfig(options_.quant_layout, quantized_notes_);
    if (!config.ok()) return config.status();
    metadata["quantization_config"] = config->dump();
  }
  uint64_t written = 0;
  output_entries_.clear();
  for (size_t i = 0; i < entries.size(); ++i) {
    const SafetensorsEntry& entry = entries[i];
    if (!packed_[i]) {
      const uint64_t dense = entry.end - entry.begin;
      header[entry.name] = EntryJson(entry.dtype_name, entry.shape, written, dense);
      output_entries_.emplace_back(entry.name, dense);
      written += dense;
      continue;
    }
    for (const SpooledPart& part : packed_[i]->parts) {
      header[part.name] = EntryJson(part.dtype, part.shape, written, part.length);
      output_entries_.emplace_back(part.name, part.length);
      written += part.length;
    }
    metadata["bonsai.packed." + entry.name] = packed_[i]->description.dump();
  }
  header["__metadata__"] = std::move(metadata);
  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');  // data 8-byte aligned, as the reference does
  std::string length_bytes(8, '\0');
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);

  if (auto status = EnsureFileStarted(); !status.ok()) return status;
  if (auto status = writer_->Write(length_bytes); !status.ok()) return status;
  if (auto status = writer_->Write(text); !status.ok()) return status;
  for (size_t i = 0; i < entries.size(); ++i) {
    absl::Status status;
    if (packed_[i]) {
      for (const SpooledPart& part : packed_[i]->parts) {
        status = writer_->CopyFrom(*packed_bytes_, part.offset, part.length);
        if (!status.ok()) return status;
      }
      continue;
    }
    if (held_[i]) {
      status = writer_->CopyFrom(*held_bytes_, held_[i]->offset, held_[i]->length);
    } else {
      status = input_.WaitFor(FileOffset(i) + (entries[i].end - entries[i].begin));
      if (status.ok()) {
        status = writer_->CopyFrom(input_.data(), FileOffset(i), entries[i].end - entries[i].begin);
      }
    }
    if (!status.ok()) return status;
  }
  return sink_->EndFile();
}

}  // namespace bonsai::formats
