// Format detection by content. The upload's name is never consulted: it is
// whatever the client's file happened to be called.
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "server/formats/model.h"
#include "server/formats/onnx_model.h"
#include "server/formats/safetensors.h"
#include "server/formats/safetensors_header.h"

namespace bonsai::formats {
namespace {

constexpr absl::string_view kSupported =
    "bonsai accepts ONNX models (.onnx, with all tensors inside the file) and "
    "safetensors files (.safetensors)";

// torch.save writes a zip archive (PyTorch >= 1.6) or a bare pickle (older,
// or _use_new_zipfile_serialization=False). Loading either runs arbitrary
// code, so they are named and refused rather than reported as unknown.
bool LooksLikePyTorch(std::string_view bytes) {
  if (bytes.substr(0, 4) == std::string_view("PK\x03\x04", 4)) return true;
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x80 &&
         bytes[1] >= 2 && bytes[1] <= 5;
}

// Frees the upload first: the proto holds its own copy of every tensor.
absl::StatusOr<std::unique_ptr<Model>> OnnxFromProto(std::unique_ptr<onnx::ModelProto> proto,
                                                     std::string& bytes) {
  std::string().swap(bytes);
  auto model = OnnxModel::Create(std::move(proto));
  if (!model.ok()) return model.status();
  return std::unique_ptr<Model>(*std::move(model));
}

}  // namespace

absl::Status CheckTensorAccess(bool serialized, size_t index, size_t tensor_count) {
  if (serialized) return absl::FailedPreconditionError("the model was already serialized");
  if (index >= tensor_count) {
    return absl::OutOfRangeError(absl::StrCat("tensor index ", index, " is out of range (",
                                              tensor_count, " tensors)"));
  }
  return absl::OkStatus();
}

std::string_view FormatName(Format format) {
  switch (format) {
    case Format::kOnnx: return "onnx";
    case Format::kSafetensors: return "safetensors";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Model>> ParseModel(std::string bytes) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the model upload is empty; ", kSupported));
  }
  if (LooksLikePyTorch(bytes)) {
    return absl::InvalidArgumentError(
        "this looks like a PyTorch checkpoint (pickle/zip); bonsai does not unpickle uploads. "
        "Save the weights with safetensors (safetensors.torch.save_file) or export to ONNX "
        "(torch.onnx.export)");
  }
  if (LooksLikeSafetensors(bytes)) {
    auto header = ParseSafetensorsHeader(bytes);
    if (header.ok()) return std::make_unique<SafetensorsModel>(std::move(bytes), *std::move(header));
    // A protobuf can have '{' at offset 8 by chance; only when the bytes are
    // not ONNX either is the safetensors error the useful one.
    if (auto onnx = ParseOnnxProto(bytes); onnx.ok()) return OnnxFromProto(*std::move(onnx), bytes);
    return header.status();
  }
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the upload (", bytes.size(), " bytes) is not a safetensors file, and an ONNX model "
        "above protobuf's 2 GiB message limit cannot be read; save the weights with "
        "safetensors (safetensors.torch.save_file) instead"));
  }
  auto onnx = ParseOnnxProto(bytes);
  if (!onnx.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the upload is neither an ONNX model nor a safetensors file (", onnx.status().message(),
        "); ", kSupported));
  }
  return OnnxFromProto(*std::move(onnx), bytes);
}

}  // namespace bonsai::formats
