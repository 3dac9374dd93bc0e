#include "server/formats/in_memory.h"

#include "absl/strings/str_cat.h"
#include "server/formats/onnx_model.h"
#include "server/formats/safetensors.h"

namespace bonsai::formats {

class MemorySink::Writer final : public OutputFileWriter {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  absl::Status Write(std::string_view bytes) override {
    out_->append(bytes);
    return absl::OkStatus();
  }
  absl::Status CopyFrom(const storage::SpoolFile& file, uint64_t offset, uint64_t length) override {
    const size_t at = out_->size();
    out_->resize(at + length);
    return file.ReadAt(offset, absl::MakeSpan(out_->data() + at, length));
  }

 private:
  std::string* out_;
};

MemorySink::MemorySink() = default;
MemorySink::~MemorySink() = default;

absl::StatusOr<OutputFileWriter*> MemorySink::BeginFile(size_t input_index, std::string_view) {
  if (writer_) return absl::FailedPreconditionError("a file is already being written");
  writer_ = std::make_unique<Writer>(&files_[input_index]);
  return writer_.get();
}

absl::Status MemorySink::EndFile() {
  writer_.reset();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<storage::SpoolFile>> MemorySink::Scratch(std::string name) {
  return storage::SpoolFile::CreateInMemory(std::move(name));
}

absl::StatusOr<InputFile> InMemoryFile(std::string name, std::string_view bytes, size_t index) {
  auto file = storage::SpoolFile::CreateInMemory(name);
  if (!file.ok()) return file.status();
  if (auto status = (*file)->Append(bytes); !status.ok()) return status;
  (*file)->Complete();
  return InputFile(index, std::move(name), bytes.size(), *std::move(file), WaitPolicy{});
}

absl::StatusOr<std::string> Model::Serialize(const SerializeOptions& options) {
  MemorySink sink;
  if (auto status = StartOutput(options, sink); !status.ok()) return status;
  if (auto status = FinishOutput(); !status.ok()) return status;
  if (sink.files().size() != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("Serialize is for single-file models; this one wrote ", sink.files().size()));
  }
  return std::move(sink.files().begin()->second);
}

absl::StatusOr<std::unique_ptr<Model>> ParseModel(std::string bytes) {
  auto input = InMemoryFile("model", bytes);
  if (!input.ok()) return input.status();
  std::string().swap(bytes);
  return OpenModelFile(*std::move(input));
}

absl::StatusOr<std::unique_ptr<Model>> ParseSafetensors(std::string bytes) {
  auto input = InMemoryFile("model.safetensors", bytes);
  if (!input.ok()) return input.status();
  auto model = SafetensorsModel::Open(*std::move(input));
  if (!model.ok()) return model.status();
  return std::unique_ptr<Model>(*std::move(model));
}

absl::StatusOr<std::unique_ptr<Model>> ParseOnnx(std::string bytes) {
  auto input = InMemoryFile("model.onnx", bytes);
  if (!input.ok()) return input.status();
  auto model = OnnxModel::Open(*input);
  if (!model.ok()) return model.status();
  return std::unique_ptr<Model>(*std::move(model));
}

}  // namespace bonsai::formats
