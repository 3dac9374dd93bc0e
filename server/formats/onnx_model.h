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
#include "server/formats/editable_graph.h"
#include "server/formats/model_files.h"
#include "server/formats/onnx_external_data.h"
#include "server/formats/onnx_quantized.h"
#include "server/formats/onnx_weights.h"

namespace bonsai::formats {

class OnnxModel final : public Model, private EditableGraph {
 public:
  // Indexes the model's tensors; InvalidArgument for tensors bonsai cannot
  // take (external data, sizes that do not match their shape).
  static absl::StatusOr<std::unique_ptr<OnnxModel>> Create(
      std::unique_ptr<onnx::ModelProto> proto);
  // Reads the whole .onnx file (waiting for it) and parses it. Tensors with
  // external data are read from `companions` (the other uploaded files);
  // companions no tensor names are written back unchanged.
  static absl::StatusOr<std::unique_ptr<OnnxModel>> Open(const InputFile& input,
                                                         std::vector<InputFile> companions = {});

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
  int64_t onnx_opset() const override { return proto_ ? DefaultOpset(*proto_) : 0; }

  EditableGraph* editable_graph() override { return this; }

 private:
  explicit OnnxModel(std::unique_ptr<onnx::ModelProto> proto) : proto_(std::move(proto)) {}
  absl::Status Edit(absl::FunctionRef<absl::Status(onnx::ModelProto&)> edit) override;
  // Indexes the proto's tensors, again after an Edit.
  absl::Status Reindex();
  absl::Status CheckUsable(size_t index) const;
  absl::StatusOr<std::string> SerializeProto(const SerializeOptions& options);
  // External tensors: their stored bytes (held once written) into raw_.
  absl::Status LoadExternal(size_t index) const;
  absl::Status WriteExternal(size_t index, absl::Span<const float> values);
  absl::Status WriteDataFiles();

  std::unique_ptr<onnx::ModelProto> proto_;
  std::vector<OnnxTensorRef> refs_;  // parallel to infos_
  std::vector<TensorInfo> infos_;
  std::vector<PackingHint> hints_;
  std::vector<std::optional<OnnxQuantizedForm>> quantized_;  // packed output, parallel to infos_
  std::vector<StoredSize> stored_;
  bool consumed_ = false;
  size_t file_index_ = 0;
  std::string file_name_ = "model.onnx";
  uint64_t resident_ = 0;
  SerializeOptions options_;
  OutputSink* sink_ = nullptr;

  // External data (onnx_external_data.h), parallel to infos_.
  struct Held {
    uint64_t offset = 0, length = 0;  // in held_bytes_
  };
  std::vector<InputFile> companions_;
  std::vector<std::optional<ExternalLocation>> external_;
  std::vector<std::optional<Held>> held_;
  std::shared_ptr<storage::SpoolFile> held_bytes_;
  mutable std::string raw_;
};

// Parses serialized ModelProto bytes (up to protobuf's 2 GiB message limit).
// InvalidArgument when the bytes are not a ModelProto with a graph.
absl::StatusOr<std::unique_ptr<onnx::ModelProto>> ParseOnnxProto(std::string_view bytes);


// Deterministic serialization (stable field order, for byte-identical
// output from identical input).
absl::StatusOr<std::string> SerializeOnnxDeterministic(const onnx::ModelProto& proto);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_MODEL_H_
