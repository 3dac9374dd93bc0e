// An ONNX model held as a parsed ModelProto. Weights are found wherever
// exporters put them (onnx_weights.h), read and written in their own storage
// form (onnx_tensor_data.h), and the model is serialized deterministically,
// so writing back unchanged values gives back the uploaded bytes of any
// canonically serialized model.
#ifndef BONSAI_SERVER_FORMATS_ONNX_MODEL_H_
#define BONSAI_SERVER_FORMATS_ONNX_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "onnx/onnx_pb.h"
#include "server/formats/model.h"
#include "server/formats/model_files.h"
#include "server/formats/onnx_weights.h"

namespace bonsai::formats {

class OnnxModel final : public Model {
 public:
  // Indexes the model's tensors; InvalidArgument for tensors bonsai cannot
  // take (external data, sizes that do not match their shape).
  static absl::StatusOr<std::unique_ptr<OnnxModel>> Create(
      std::unique_ptr<onnx::ModelProto> proto);
  // Reads the whole .onnx file (waiting for it) and parses it.
  static absl::StatusOr<std::unique_ptr<OnnxModel>> Open(const InputFile& input);

  Format format() const override { return Format::kOnnx; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  absl::Status ReadInto(size_t index, tensor::FloatTensor& out) const override;
  absl::Status Write(size_t index, const tensor::FloatTensor& values,
                     const PackingHint& packing) override;
  absl::Status StartOutput(const SerializeOptions& options, OutputSink& sink) override;
  absl::Status FinishOutput() override;
  std::vector<StoredSize> stored_sizes() const override { return stored_; }
  uint64_t largest_tensor_bytes() const override;
  // The parsed graph holds every weight: about the file's size.
  uint64_t resident_bytes() const override { return resident_; }

  // For graph surgery (physical channel pruning). Call Reindex() after
  // changing which tensors exist or their shapes: tensors() and the indices
  // into it are stale until then.
  onnx::ModelProto* mutable_proto() { return proto_.get(); }
  absl::Status Reindex();

 private:
  explicit OnnxModel(std::unique_ptr<onnx::ModelProto> proto) : proto_(std::move(proto)) {}
  absl::Status CheckUsable(size_t index) const;
  absl::StatusOr<std::string> SerializeProto(const SerializeOptions& options);

  std::unique_ptr<onnx::ModelProto> proto_;
  std::vector<OnnxTensorRef> refs_;  // parallel to infos_
  std::vector<TensorInfo> infos_;
  std::vector<PackingHint> hints_;
  std::vector<StoredSize> stored_;
  bool consumed_ = false;
  size_t file_index_ = 0;
  std::string file_name_ = "model.onnx";
  uint64_t resident_ = 0;
  SerializeOptions options_;
  OutputSink* sink_ = nullptr;
};

// Parses serialized ModelProto bytes (up to protobuf's 2 GiB message limit).
// InvalidArgument when the bytes are not a ModelProto with a graph.
absl::StatusOr<std::unique_ptr<onnx::ModelProto>> ParseOnnxProto(std::string_view bytes);


// Deterministic serialization (stable field order, for byte-identical
// output from identical input).
absl::StatusOr<std::string> SerializeOnnxDeterministic(const onnx::ModelProto& proto);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_MODEL_H_
