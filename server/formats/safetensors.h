// A safetensors model worked on in place: the upload's bytes are the only
// copy. Read decodes one tensor out, Write encodes it back into its own
// span, and dense Serialize hands the same buffer back, header bytes as they
// came in (writes never change a shape, so the header never changes).
#ifndef BONSAI_SERVER_FORMATS_SAFETENSORS_H_
#define BONSAI_SERVER_FORMATS_SAFETENSORS_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/formats/model.h"
#include "server/formats/safetensors_header.h"

namespace bonsai::formats {

// The default-selection rule for safetensors: embedding tables and the
// output head (often the same matrix, tied) are left dense, since pruning
// them costs far more accuracy than their share of parameters. A name is an
// embedding when, lower-cased, it contains "embed" (embed_tokens,
// word_embeddings, tok_embeddings, ...), "wte", "wpe" or "lm_head".
bool IsEmbeddingName(std::string_view name);

class SafetensorsModel final : public Model {
 public:
  // `header` must come from ParseSafetensorsHeader(bytes).
  SafetensorsModel(std::string bytes, SafetensorsHeader header);

  Format format() const override { return Format::kSafetensors; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  absl::Status ReadInto(size_t index, tensor::FloatTensor& out) const override;
  absl::StatusOr<tensor::ChangeStats> CompareWithStored(
      size_t index, absl::Span<const float> after) const override;
  absl::Status Write(size_t index, const tensor::FloatTensor& values,
                     const PackingHint& packing) override;
  absl::StatusOr<std::string> Serialize(const SerializeOptions& options) override;
  std::vector<StoredSize> stored_sizes() const override { return stored_; }

 private:
  absl::Status CheckUsable(size_t index) const;
  unsigned char* TensorData(size_t index);
  const unsigned char* TensorData(size_t index) const;
  absl::StatusOr<std::string> SerializePacked();

  std::string bytes_;
  SafetensorsHeader header_;
  std::vector<TensorInfo> infos_;  // parallel to header_.entries
  std::vector<PackingHint> hints_;
  std::vector<StoredSize> stored_;
  bool consumed_ = false;
};

// Parses a safetensors file (for callers that know the format already).
absl::StatusOr<std::unique_ptr<Model>> ParseSafetensors(std::string bytes);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_SAFETENSORS_H_
