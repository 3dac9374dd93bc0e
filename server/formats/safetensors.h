// One safetensors file, read in place from the spool and written as a
// stream. Read pulls one tensor's bytes with a positional read (waiting for
// them if they are still uploading); Write encodes the new values into those
// bytes. In dense output the header never changes, so each tensor goes out as
// soon as it is written, with the unchanged bytes before it copied from the
// upload; packed output holds the tensors in a scratch spool file until every
// one is known, since the header that comes first depends on all of them.
#ifndef BONSAI_SERVER_FORMATS_SAFETENSORS_H_
#define BONSAI_SERVER_FORMATS_SAFETENSORS_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/formats/model.h"
#include "server/formats/model_files.h"
#include "server/formats/safetensors_header.h"
#include "server/formats/safetensors_quantized.h"

namespace bonsai::formats {

// The default-selection rule for safetensors: embedding tables and the
// output head (often the same matrix, tied) are left dense, since pruning
// them costs far more accuracy than their share of parameters. A name is an
// embedding when, lower-cased, it contains "embed" (embed_tokens,
// word_embeddings, tok_embeddings, ...), "wte", "wpe" or "lm_head".
bool IsEmbeddingName(std::string_view name);

// Sets TensorInfo::output_head over one model's tensors (all shards, in the
// index's order): weights with a name component lm_head, classifier, score
// or head; when none has one and there are several, the last tensor selected
// by default.
void MarkOutputHeads(std::vector<TensorInfo>& tensors);

class SafetensorsModel final : public Model {
 public:
  // Reads and validates the header (waiting for its bytes).
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> Open(InputFile input);

  Format format() const override { return Format::kSafetensors; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  absl::Status ReadInto(size_t index, tensor::FloatTensor& out) const override;
  absl::StatusOr<tensor::ChangeStats> CompareWithStored(
      size_t index, absl::Span<const float> after) const override;
  absl::Status Write(size_t index, const tensor::FloatTensor& values,
                     const PackingHint& packing) override;
  absl::Status StartOutput(const SerializeOptions& options, OutputSink& sink) override;
  absl::Status FinishOutput() override;
  std::vector<StoredSize> stored_sizes() const override { return stored_; }
  uint64_t largest_tensor_bytes() const override;

  // After FinishOutput: every tensor of the output with its byte size, in
  // data order (packed tensors appear as their parts), for the index file.
  const std::vector<std::pair<std::string, uint64_t>>& output_entries() const {
    return output_entries_;
  }
  const InputFile& input() const { return input_; }
  // After FinishOutput: the quantized tensors stored packed, for the
  // folder's config.json.
  const std::vector<QuantizedTensorNote>& quantized_notes() const { return quantized_notes_; }
  // Frees the cached bytes of the last tensor read: a sharded model keeps
  // one tensor's buffers in memory, not one per shard.
  void DropCachedBytes() const {
    std::string().swap(raw_);
    raw_index_ = -1;
  }

 private:
  SafetensorsModel(InputFile input, SafetensorsHeader header);
  absl::Status CheckUsable(size_t index) const;
  // The tensor's stored bytes into raw_ (kept for the last tensor read).
  absl::Status LoadRaw(size_t index) const;
  absl::Status ReadFloatsInPlace(size_t index, tensor::FloatTensor& out) const;
  uint64_t FileOffset(size_t index) const {
    return header_.data_start + header_.entries[index].begin;
  }
  absl::Status EnsureFileStarted();
  absl::Status EmitInputUpTo(uint64_t file_offset);
  absl::StatusOr<std::shared_ptr<storage::SpoolFile>> HeldBytes();
  absl::Status FinishDense();
  absl::Status FinishPacked();
  // Packed output of a quantized tensor, from its float values as written.
  absl::Status PackQuantized(size_t index, const tensor::FloatTensor& values,
                             const PackingHint& packing);
  absl::Status SpoolPacked(size_t index, const PackedTensor& form);

  // Where a written tensor's bytes wait when they cannot stream yet.
  struct Held {
    uint64_t offset = 0, length = 0;
  };

  InputFile input_;
  SafetensorsHeader header_;
  std::vector<TensorInfo> infos_;  // parallel to header_.entries
  std::vector<PackingHint> hints_;
  std::vector<StoredSize> stored_;
  std::vector<std::optional<Held>> held_;  // parallel to entries
  std::shared_ptr<storage::SpoolFile> held_bytes_;
  std::vector<std::pair<std::string, uint64_t>> output_entries_;

  // Packed output: each packed tensor's parts wait in packed_bytes_.
  struct SpooledPart {
    std::string name, dtype;
    std::vector<int64_t> shape;
    uint64_t offset = 0, length = 0;  // in packed_bytes_
  };
  struct Spooled {
    std::vector<SpooledPart> parts;
    nlohmann::json description;
  };
  std::vector<std::optional<Spooled>> packed_;  // parallel to entries
  std::shared_ptr<storage::SpoolFile> packed_bytes_;
  std::vector<QuantizedTensorNote> quantized_notes_;

  mutable std::string raw_;  // the last tensor's stored bytes
  mutable int64_t raw_index_ = -1;

  SerializeOptions options_;
  OutputSink* sink_ = nullptr;
  OutputFileWriter* writer_ = nullptr;
  uint64_t emitted_ = 0;  // input bytes already accounted for in the output
  bool finished_ = false;
};

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_SAFETENSORS_H_
