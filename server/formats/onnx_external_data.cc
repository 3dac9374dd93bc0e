#include "server/formats/onnx_external_data.h"

#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/formats/model_set.h"
#include "server/formats/onnx_model.h"

namespace bonsai::formats {
namespace {

absl::Status Hostile(const std::string& tensor_name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "tensor \"", tensor_name, "\": ", what,
      "; external data must name a file uploaded beside the .onnx file, by a relative path "
      "inside its folder, with offset and length inside that file"));
}

}  // namespace

absl::StatusOr<ExternalLocation> ResolveExternalData(const onnx::TensorProto& tensor,
                                                     const std::string& tensor_name,
                                                     const std::string& onnx_name,
                                                     const std::vector<InputFile>& files,
                                                     uint64_t bytes_needed) {
  std::string location;
  uint64_t offset = 0;
  std::optional<uint64_t> length;
  for (const auto& entry : tensor.external_data()) {
    if (entry.key() == "location") {
      location = entry.value();
    } else if (entry.key() == "offset" || entry.key() == "length") {
      uint64_t value = 0;
      if (!absl::SimpleAtoi(entry.value(), &value)) {
        return Hostile(tensor_name, absl::StrCat(entry.key(), " \"", entry.value(),
                                                 "\" is not a non-negative integer"));
      }
      if (entry.key() == "offset") offset = value;
      else length = value;
    }
  }
  if (location.empty()) return Hostile(tensor_name, "its external data names no location");
  if (!IsSafeRelativePath(location)) {
    return Hostile(tensor_name, absl::StrCat("location \"", location,
                                             "\" is absolute or leaves the model's folder"));
  }
  const size_t slash = onnx_name.rfind('/');
  const std::string path =
      (slash == std::string::npos ? "" : onnx_name.substr(0, slash + 1)) + location;
  for (size_t i = 0; i < files.size(); ++i) {
    if (files[i].name() != path) continue;
    const uint64_t size = files[i].size();
    if (offset > size) {
      return Hostile(tensor_name, absl::StrCat("offset ", offset, " is past the end of ", path,
                                               " (", size, " bytes)"));
    }
    const uint64_t bytes = length.value_or(size - offset);
    if (bytes > size - offset) {
      return Hostile(tensor_name, absl::StrCat("offset ", offset, " + length ", bytes,
                                               " is past the end of ", path, " (", size, " bytes)"));
    }
    if (bytes_needed > 0 && bytes != bytes_needed) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", tensor_name, "\" has ", bytes, " bytes of external data in ", path,
          " but its shape and dtype need ", bytes_needed, "; re-export the model"));
    }
    return ExternalLocation{i, offset, bytes};
  }
  return Hostile(tensor_name, absl::StrCat("location \"", location, "\" (", path,
                                           ") was not uploaded with the model"));
}

absl::StatusOr<std::unique_ptr<Model>> OpenOnnxWithExternalData(InputFile onnx,
                                                                std::vector<InputFile> others) {
  auto model = OnnxModel::Open(onnx, std::move(others));
  if (!model.ok()) return model.status();
  return std::unique_ptr<Model>(*std::move(model));
}

}  // namespace bonsai::formats
