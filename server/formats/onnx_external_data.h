// An .onnx file uploaded with other files: the external data files its
// tensors name (location, offset, length), resolved only among the uploaded
// files, and files bonsai does not read, which come back byte for byte.
#ifndef BONSAI_SERVER_FORMATS_ONNX_EXTERNAL_DATA_H_
#define BONSAI_SERVER_FORMATS_ONNX_EXTERNAL_DATA_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/formats/model.h"
#include "server/formats/model_files.h"

namespace bonsai::formats {

absl::StatusOr<std::unique_ptr<Model>> OpenOnnxWithExternalData(InputFile onnx,
                                                                std::vector<InputFile> others);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_EXTERNAL_DATA_H_
