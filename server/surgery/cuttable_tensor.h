// The constants channel surgery cuts: FLOAT tensors kept inside the proto,
// read through the format's one reader (formats/onnx_tensor_data.h) and
// rewritten with fewer channels in the storage field they already used.
#ifndef BONSAI_SERVER_SURGERY_CUTTABLE_TENSOR_H_
#define BONSAI_SERVER_SURGERY_CUTTABLE_TENSOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"

namespace bonsai::surgery {

// Why the tensor cannot be cut here; OK when it can (FLOAT, inline, as many
// values as its dims say). A note in the report quotes the message.
absl::Status CheckCuttable(const onnx::TensorProto& tensor);
absl::StatusOr<std::vector<float>> ReadFloats(const onnx::TensorProto& tensor);

// Keeps the `keep` indices (ascending) of `axis` and rewrites dims and data,
// in the storage field the tensor already used.
absl::Status KeepIndices(onnx::TensorProto& tensor, int axis,
                         const std::vector<int64_t>& keep);

}  // namespace bonsai::surgery

#endif  // BONSAI_SERVER_SURGERY_CUTTABLE_TENSOR_H_
