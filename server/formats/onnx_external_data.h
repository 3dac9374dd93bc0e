// ONNX external data: tensors whose bytes live in other files (location,
// offset, length in TensorProto.external_data), as onnx.save writes models
// over protobuf's 2 GiB limit. A location is resolved only among the files
// uploaded with the .onnx file, relative to its folder: an absolute path,
// "..", a file not uploaded, or a range outside its file is refused.
#ifndef BONSAI_SERVER_FORMATS_ONNX_EXTERNAL_DATA_H_
#define BONSAI_SERVER_FORMATS_ONNX_EXTERNAL_DATA_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "server/formats/model.h"
#include "server/formats/model_files.h"

namespace bonsai::formats {

struct ExternalLocation {
  size_t file = 0;  // index into the companions the model was opened with
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Resolves `tensor`'s external data among `files` (names relative to the
// job), for a tensor of `bytes_needed` bytes (0: any length). `onnx_name`
// is the .onnx file's name, whose folder locations are relative to.
absl::StatusOr<ExternalLocation> ResolveExternalData(const onnx::TensorProto& tensor,
                                                     const std::string& tensor_name,
                                                     const std::string& onnx_name,
                                                     const std::vector<InputFile>& files,
                                                     uint64_t bytes_needed);

// The .onnx file and every other file uploaded with it: the model reads
// its external tensors from them; files no tensor names come back unchanged.
absl::StatusOr<std::unique_ptr<Model>> OpenOnnxWithExternalData(InputFile onnx,
                                                                std::vector<InputFile> others);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_EXTERNAL_DATA_H_
