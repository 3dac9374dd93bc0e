#include "server/formats/model_set.h"

#include <algorithm>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/formats/onnx_external_data.h"
#include "server/formats/safetensors.h"

namespace bonsai::formats {
namespace {

using json = nlohmann::json;

std::string DirectoryOf(const std::string& name) {
  const size_t slash = name.rfind('/');
  return slash == std::string::npos ? "" : name.substr(0, slash + 1);
}

// A Hugging Face checkpoint's shards as one model.
class ShardedSafetensors final : public Model {
 public:
  ShardedSafetensors(std::vector<std::unique_ptr<SafetensorsModel>> shards,
                     std::optional<InputFile> index, json index_json,
                     std::vector<InputFile> others)
      : shards_(std::move(shards)), index_(std::move(index)),
        index_json_(std::move(index_json)), others_(std::move(others)) {
    for (size_t s = 0; s < shards_.size(); ++s) {
      for (size_t t = 0; t < shards_[s]->tensors().size(); ++t) {
        infos_.push_back(shards_[s]->tensors()[t]);
        where_.emplace_back(s, t);
      }
    }
    MarkOutputHeads(infos_);
  }

  Format format() const override { return Format::kSafetensors; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }

  absl::Status ReadInto(size_t index, tensor::FloatTensor& out) const override {
    if (index >= where_.size()) return CheckTensorAccess(false, index, where_.size());
    return Shard(index).ReadInto(where_[index].second, out);
  }
  absl::StatusOr<tensor::ChangeStats> CompareWithStored(
      size_t index, absl::Span<const float> after) const override {
    if (index >= where_.size()) return CheckTensorAccess(false, index, where_.size());
    return Shard(index).CompareWithStored(where_[index].second, after);
  }
  absl::Status Write(size_t index, const tensor::FloatTensor& values,
                     const PackingHint& packing) override {
    if (index >= where_.size()) return CheckTensorAccess(false, index, where_.size());
    const size_t shard = where_[index].first;
    if (sink_ != nullptr) {
      // Every shard before this one is final: send it.
      if (shard < finished_shards_) {
        return absl::FailedPreconditionError("tensors must be written in order once output started");
      }
      while (finished_shards_ < shard) {
        if (auto s = shards_[finished_shards_++]->FinishOutput(); !s.ok()) return s;
      }
    }
    return Shard(index).Write(where_[index].second, values, packing);
  }

  absl::Status StartOutput(const SerializeOptions& options, OutputSink& sink) override {
    if (sink_ != nullptr) return absl::FailedPreconditionError("output was already started");
    sink_ = &sink;
    options_ = options;
    for (auto& shard : shards_) {
      if (auto s = shard->StartOutput(options, sink); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::Status FinishOutput() override {
    if (sink_ == nullptr) return absl::FailedPreconditionError("StartOutput was not called");
    while (finished_shards_ < shards_.size()) {
      if (auto s = shards_[finished_shards_++]->FinishOutput(); !s.ok()) return s;
    }
    if (index_) {
      if (auto s = WriteIndex(); !s.ok()) return s;
    }
    for (const InputFile& other : others_) {
      if (IsModelConfig(other)) {
        if (auto s = WriteConfig(other); !s.ok()) return s;
        continue;
      }
      if (auto s = PassThrough(other, "other", *sink_); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  std::vector<StoredSize> stored_sizes() const override {
    std::vector<StoredSize> all;
    for (const auto& shard : shards_) {
      const auto sizes = shard->stored_sizes();
      all.insert(all.end(), sizes.begin(), sizes.end());
    }
    return all;
  }

  uint64_t largest_tensor_bytes() const override {
    uint64_t largest = 0;
    for (const auto& shard : shards_) largest = std::max(largest, shard->largest_tensor_bytes());
    return largest;
  }

 private:
  static bool IsModelConfig(const InputFile& file) {
    return file.name() == "config.json" || absl::EndsWith(file.name(), "/config.json");
  }

  // A Hugging Face config.json gets the `quantization_config` that loaders
  // (transformers, vLLM) read to find the packed layout, when tensors were
  // stored quantized; otherwise, or when it is not a JSON object, it comes
  // back byte for byte.
  absl::Status WriteConfig(const InputFile& config) {
    std::vector<QuantizedTensorNote> notes;
    for (const auto& shard : shards_) {
      notes.insert(notes.end(), shard->quantized_notes().begin(), shard->quantized_notes().end());
    }
    if (notes.empty() || config.size() > (16u << 20)) return PassThrough(config, "other", *sink_);
    auto text = config.ReadAll();
    if (!text.ok()) return text.status();
    json parsed = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !parsed.is_object()) return PassThrough(config, "other", *sink_);
    auto quantization = QuantizationConfig(options_.quant_layout, notes);
    if (!quantization.ok()) return quantization.status();
    parsed["quantization_config"] = *std::move(quantization);
    auto writer = sink_->BeginFile(config.index(), "other");
    if (!writer.ok()) return writer.status();
    if (auto s = (*writer)->Write(parsed.dump(2) + "\n"); !s.ok()) return s;
    return sink_->EndFile();
  }

  // Rewritten only when the output's tensors differ from the input's (packed
  // output renames and resizes them); otherwise the index comes back as sent.
  absl::Status WriteIndex() {
    json weight_map = json::object();
    uint64_t total = 0;
    bool changed = false;
    for (const auto& shard : shards_) {
      const std::string file = shard->input().name().substr(DirectoryOf(index_->name()).size());
      for (const auto& [name, bytes] : shard->output_entries()) {
        weight_map[name] = file;
        total += bytes;
      }
    }
    const json& old_map = index_json_["weight_map"];
    changed = weight_map != old_map;
    if (!changed) {
      uint64_t old_total = 0;
      for (const auto& shard : shards_) {
        for (const TensorInfo& info : shard->tensors()) {
          old_total += info.params * tensor::DTypeSize(info.dtype);
        }
      }
      changed = total != old_total;
    }
    if (!changed) return PassThrough(*index_, "index", *sink_);
    json out = index_json_;
    out["metadata"]["total_size"] = total;
    out["weight_map"] = std::move(weight_map);
    auto writer = sink_->BeginFile(index_->index(), "index");
    if (!writer.ok()) return writer.status();
    if (auto s = (*writer)->Write(out.dump(2) + "\n"); !s.ok()) return s;
    return sink_->EndFile();
  }

  // The shard holding tensor `index`; the shard used before it drops its
  // cached tensor bytes.
  SafetensorsModel& Shard(size_t index) const {
    const size_t shard = where_[index].first;
    if (last_shard_ != shard && last_shard_ < shards_.size()) shards_[last_shard_]->DropCachedBytes();
    last_shard_ = shard;
    return *shards_[shard];
  }

  std::vector<std::unique_ptr<SafetensorsModel>> shards_;
  mutable size_t last_shard_ = SIZE_MAX;
  std::optional<InputFile> index_;
  json index_json_;
  std::vector<InputFile> others_;
  std::vector<TensorInfo> infos_;
  std::vector<std::pair<size_t, size_t>> where_;  // shard, tensor in shard
  OutputSink* sink_ = nullptr;
  SerializeOptions options_;
  size_t finished_shards_ = 0;
};

absl::Status Invalid(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

absl::StatusOr<json> ReadIndex(const InputFile& index) {
  if (index.size() > (64u << 20)) {
    return Invalid(absl::StrCat(index.name(), " is ", index.size(),
                                " bytes; an index file is a small JSON map of tensor names"));
  }
  auto text = index.ReadAll();
  if (!text.ok()) return text.status();
  json parsed = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("weight_map") ||
      !parsed["weight_map"].is_object()) {
    return Invalid(absl::StrCat(index.name(),
                                " is not a safetensors index (a JSON object with a \"weight_map\" "
                                "of tensor name -> shard file); upload the file the checkpoint came with"));
  }
  for (const auto& [name, file] : parsed["weight_map"].items()) {
    if (!file.is_string()) {
      return Invalid(absl::StrCat(index.name(), ": weight_map[\"", name, "\"] must be a file name"));
    }
  }
  return parsed;
}

// Every shard the index names is uploaded, and every tensor is in the shard
// the index says.
absl::Status CheckIndex(const InputFile& index, const json& parsed,
                        const std::vector<std::unique_ptr<SafetensorsModel>>& shards) {
  const std::string dir = DirectoryOf(index.name());
  absl::flat_hash_map<std::string, const SafetensorsModel*> by_name;
  for (const auto& shard : shards) by_name[shard->input().name()] = shard.get();
  const json& map = parsed["weight_map"];
  for (const auto& [tensor_name, file] : map.items()) {
    const std::string path = dir + file.get<std::string>();
    if (!by_name.contains(path)) {
      return Invalid(absl::StrCat(index.name(), " puts tensor \"", tensor_name, "\" in ", path,
                                  ", which was not uploaded; upload every shard the index names"));
    }
  }
  for (const auto& shard : shards) {
    for (const TensorInfo& info : shard->tensors()) {
      auto it = map.find(info.name);
      if (it == map.end()) {
        return Invalid(absl::StrCat(shard->input().name(), " holds tensor \"", info.name, "\", which ",
                                    index.name(), " does not list; upload the index that belongs "
                                    "to these shards"));
      }
      const std::string path = dir + it->get<std::string>();
      if (path != shard->input().name()) {
        return Invalid(absl::StrCat("tensor \"", info.name, "\" is in ", shard->input().name(),
                                    " but ", index.name(), " puts it in ", path,
                                    "; upload the index that belongs to these shards"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsSafeRelativePath(std::string_view name) {
  if (name.empty() || name.front() == '/' || name.find('\0') != std::string_view::npos ||
      name.find('\\') != std::string_view::npos) {
    return false;
  }
  for (absl::string_view part : absl::StrSplit(absl::string_view(name.data(), name.size()), '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<Model>> OpenModelFiles(std::vector<InputFile> files) {
  if (files.empty()) {
    return Invalid("the job declares no files; declare the model's files in the spec");
  }
  if (files.size() == 1) return OpenModelFile(std::move(files[0]));

  std::vector<InputFile> shard_files, onnx_files, others;
  std::optional<InputFile> index;
  for (InputFile& file : files) {
    const std::string& name = file.name();
    if (absl::EndsWith(name, ".safetensors")) {
      shard_files.push_back(std::move(file));
    } else if (absl::EndsWith(name, ".safetensors.index.json")) {
      if (index) {
        return Invalid(absl::StrCat("two index files (", index->name(), ", ", name,
                                    "); upload one checkpoint per job"));
      }
      index = std::move(file);
    } else if (absl::EndsWith(name, ".onnx")) {
      onnx_files.push_back(std::move(file));
    } else {
      others.push_back(std::move(file));
    }
  }
  if (!onnx_files.empty() && !shard_files.empty()) {
    return Invalid(absl::StrCat("the job mixes ONNX (", onnx_files[0].name(), ") and safetensors (",
                                shard_files[0].name(), ") files; send one model per job"));
  }
  if (!onnx_files.empty()) {
    if (onnx_files.size() > 1) {
      return Invalid(absl::StrCat("the job holds ", onnx_files.size(), " .onnx files (",
                                  onnx_files[0].name(), ", ", onnx_files[1].name(),
                                  "); send one ONNX model per job"));
    }
    return OpenOnnxWithExternalData(std::move(onnx_files[0]), std::move(others));
  }
  if (shard_files.empty()) {
    std::vector<std::string> names;
    for (const InputFile& file : others) names.push_back(file.name());
    return Invalid(absl::StrCat("none of the job's files (", absl::StrJoin(names, ", "),
                                ") is a model: send .safetensors shards or an .onnx file"));
  }
  std::sort(shard_files.begin(), shard_files.end(),
            [](const InputFile& a, const InputFile& b) { return a.name() < b.name(); });
  std::vector<std::unique_ptr<SafetensorsModel>> shards;
  absl::flat_hash_map<std::string, std::string> owner;
  for (InputFile& file : shard_files) {
    const std::string name = file.name();
    auto shard = SafetensorsModel::Open(std::move(file));
    if (!shard.ok()) {
      return absl::Status(shard.status().code(), absl::StrCat(name, ": ", shard.status().message()));
    }
    for (const TensorInfo& info : (*shard)->tensors()) {
      auto [it, inserted] = owner.emplace(info.name, (*shard)->input().name());
      if (!inserted) {
        return Invalid(absl::StrCat("tensor \"", info.name, "\" is in both ", it->second, " and ",
                                    (*shard)->input().name(), "; each tensor must be in one shard"));
      }
    }
    shards.push_back(*std::move(shard));
  }
  json index_json;
  if (index) {
    auto parsed = ReadIndex(*index);
    if (!parsed.ok()) return parsed.status();
    if (auto s = CheckIndex(*index, *parsed, shards); !s.ok()) return s;
    index_json = *std::move(parsed);
  }
  return std::unique_ptr<Model>(new ShardedSafetensors(std::move(shards), std::move(index),
                                                       std::move(index_json), std::move(others)));
}

}  // namespace bonsai::formats
