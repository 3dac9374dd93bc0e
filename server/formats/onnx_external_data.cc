#include "server/formats/onnx_external_data.h"

#include "server/formats/onnx_model.h"

namespace bonsai::formats {
namespace {

// The model, then every other file unchanged.
class WithCompanions final : public Model {
 public:
  WithCompanions(std::unique_ptr<Model> model, std::vector<InputFile> others)
      : model_(std::move(model)), others_(std::move(others)) {}

  Format format() const override { return model_->format(); }
  const std::vector<TensorInfo>& tensors() const override { return model_->tensors(); }
  absl::Status ReadInto(size_t index, tensor::FloatTensor& out) const override {
    return model_->ReadInto(index, out);
  }
  absl::StatusOr<tensor::ChangeStats> CompareWithStored(
      size_t index, absl::Span<const float> after) const override {
    return model_->CompareWithStored(index, after);
  }
  absl::Status Write(size_t index, const tensor::FloatTensor& values,
                     const PackingHint& packing) override {
    return model_->Write(index, values, packing);
  }
  absl::Status StartOutput(const SerializeOptions& options, OutputSink& sink) override {
    sink_ = &sink;
    return model_->StartOutput(options, sink);
  }
  absl::Status FinishOutput() override {
    if (auto s = model_->FinishOutput(); !s.ok()) return s;
    for (const InputFile& other : others_) {
      if (auto s = PassThrough(other, "other", *sink_); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  std::vector<StoredSize> stored_sizes() const override { return model_->stored_sizes(); }
  uint64_t largest_tensor_bytes() const override { return model_->largest_tensor_bytes(); }
  uint64_t resident_bytes() const override { return model_->resident_bytes(); }
  Model* inner() { return model_.get(); }

 private:
  std::unique_ptr<Model> model_;
  std::vector<InputFile> others_;
  OutputSink* sink_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> OpenOnnxWithExternalData(InputFile onnx,
                                                                std::vector<InputFile> others) {
  auto model = OnnxModel::Open(onnx);
  if (!model.ok()) return model.status();
  return std::unique_ptr<Model>(
      new WithCompanions(std::unique_ptr<Model>(*std::move(model)), std::move(others)));
}

}  // namespace bonsai::formats
