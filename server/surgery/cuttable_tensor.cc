#include "server/surgery/cuttable_tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "server/formats/onnx_tensor_data.h"

namespace bonsai::surgery {

absl::Status CheckCuttable(const onnx::TensorProto& tensor) {
  // A cut rewrites the values as float32, so only FLOAT keeps its dtype.
  if (tensor.data_type() != onnx::TensorProto::FLOAT) {
    return absl::UnimplementedError(absl::StrCat(
        "'", tensor.name(), "' is not FLOAT (data_type ", tensor.data_type(), ")"));
  }
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
    return absl::UnimplementedError(
        absl::StrCat("'", tensor.name(), "' keeps its data in an external file"));
  }
  uint64_t count = 0;
  return formats::CheckOnnxTensorStorage(tensor, tensor.name(), &count);
}

absl::StatusOr<std::vector<float>> ReadFloats(const onnx::TensorProto& tensor) {
  if (absl::Status status = CheckCuttable(tensor); !status.ok()) return status;
  std::vector<float> values(formats::OnnxElementCount(tensor));
  if (absl::Status status = formats::ReadOnnxTensor(tensor, absl::MakeSpan(values)); !status.ok()) {
    return status;
  }
  return values;
}

absl::Status KeepIndices(onnx::TensorProto& tensor, int axis, const std::vector<int64_t>& keep) {
  if (axis < 0 || axis >= tensor.dims_size()) {
    return absl::InternalError(
        absl::StrCat("axis ", axis, " out of range for '", tensor.name(), "'"));
  }
  absl::StatusOr<std::vector<float>> values = ReadFloats(tensor);
  if (!values.ok()) return values.status();
  uint64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= tensor.dims(d);
  for (int d = axis + 1; d < tensor.dims_size(); ++d) inner *= tensor.dims(d);
  const uint64_t extent = tensor.dims(axis);
  std::vector<float> kept;
  kept.reserve(outer * keep.size() * inner);
  for (uint64_t o = 0; o < outer; ++o) {
    const float* block = values->data() + o * extent * inner;
    for (int64_t index : keep) {
      kept.insert(kept.end(), block + index * inner, block + (index + 1) * inner);
    }
  }
  tensor.set_dims(axis, static_cast<int64_t>(keep.size()));
  if (tensor.has_raw_data()) {
    tensor.set_raw_data(kept.data(), kept.size() * sizeof(float));
  } else {
    tensor.mutable_float_data()->Assign(kept.begin(), kept.end());
  }
  return absl::OkStatus();
}

}  // namespace bonsai::surgery
