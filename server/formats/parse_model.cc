// Format detection by content. The upload's name is never consulted: it is
// whatever the client's file happened to be called.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "server/formats/model.h"
#include "server/formats/model_files.h"
#include "server/formats/onnx_model.h"
#include "server/formats/safetensors.h"
#include "server/formats/safetensors_header.h"

namespace bonsai::formats {
namespace {

constexpr absl::string_view kSupported =
    "bonsai accepts ONNX models (.onnx, with any external data files beside it), "
    "safetensors files (.safetensors) and Hugging Face folders of safetensors shards";

// torch.save writes a zip archive (PyTorch >= 1.6) or a bare pickle (older,
// or _use_new_zipfile_serialization=False). Loading either runs arbitrary
// code, so they are named and refused rather than reported as unknown.
bool LooksLikePyTorch(std::string_view bytes) {
  if (bytes.substr(0, 4) == std::string_view("PK\x03\x04", 4)) return true;
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x80 &&
         bytes[1] >= 2 && bytes[1] <= 5;
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

absl::StatusOr<std::unique_ptr<Model>> OpenModelFile(InputFile input) {
  if (input.size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(input.name(), " is empty; ", kSupported));
  }
  std::string head(std::min<uint64_t>(input.size(), 16), '\0');
  if (auto status = input.ReadAt(0, absl::MakeSpan(head.data(), head.size())); !status.ok()) {
    return status;
  }
  const absl::Status pytorch = absl::InvalidArgumentError(absl::StrCat(
      input.name(), " looks like a PyTorch checkpoint (pickle/zip); bonsai does not unpickle "
      "uploads. Save the weights with safetensors (safetensors.torch.save_file) or export to "
      "ONNX (torch.onnx.export)"));
  // Safetensors first: a header of 640, 896, 1152 or 1408 bytes starts with
  // the same two bytes as a pickle (0x80, 2..5).
  if (LooksLikeSafetensors(head)) {
    auto model = SafetensorsModel::Open(input);
    if (model.ok()) return std::unique_ptr<Model>(*std::move(model));
    if (!absl::IsInvalidArgument(model.status())) return model.status();
    if (LooksLikePyTorch(head)) return pytorch;
    if (input.size() > static_cast<size_t>(INT32_MAX)) return model.status();
    // A protobuf can have '{' at offset 8 by chance; only when the bytes are
    // not ONNX either is the safetensors error the useful one.
    auto onnx = OnnxModel::Open(input);
    if (onnx.ok()) return std::unique_ptr<Model>(*std::move(onnx));
    return model.status();
  }
  if (LooksLikePyTorch(head)) return pytorch;
  if (input.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(
        input.name(), " (", input.size(), " bytes) is not a safetensors file, and an ONNX model "
        "above protobuf's 2 GiB message limit cannot be read; keep its weights in external data "
        "files (onnx.save(..., save_as_external_data=True)) or save them with safetensors"));
  }
  auto onnx = OnnxModel::Open(input);
  if (!onnx.ok()) {
    if (!absl::IsInvalidArgument(onnx.status())) return onnx.status();
    return absl::InvalidArgumentError(absl::StrCat(
        input.name(), " is neither an ONNX model nor a safetensors file (",
        onnx.status().message(), "); ", kSupported));
  }
  return std::unique_ptr<Model>(*std::move(onnx));
}

}  // namespace bonsai::formats
