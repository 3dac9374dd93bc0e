// The values of one ONNX TensorProto, wherever the exporter put them:
// raw_data (little-endian bytes) or the typed repeated fields (float_data,
// double_data, and int32_data holding FLOAT16/BFLOAT16 bit patterns in the
// low 16 bits). Writes keep the tensor's storage form, so everything a
// method did not change is serialized exactly as it came in.
#ifndef BONSAI_SERVER_FORMATS_ONNX_TENSOR_DATA_H_
#define BONSAI_SERVER_FORMATS_ONNX_TENSOR_DATA_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "onnx/onnx_pb.h"
#include "server/tensor/dtype.h"

namespace bonsai::formats {

tensor::DType DTypeFromOnnx(int32_t data_type);

// The element count its dims say; 0 when a dim is negative or the product
// overflows (CheckOnnxTensorStorage refuses such tensors).
uint64_t OnnxElementCount(const onnx::TensorProto& tensor);

// Checks that the tensor's data is inside the proto and has the size its
// dims say; `name` is used in the messages. Sets the element count.
absl::Status CheckOnnxTensorStorage(const onnx::TensorProto& tensor, absl::string_view name,
                                    uint64_t* count);

// For floating tensors that passed CheckOnnxTensorStorage.
absl::Status ReadOnnxTensor(const onnx::TensorProto& tensor, absl::Span<float> out);
absl::Status WriteOnnxTensor(onnx::TensorProto& tensor, absl::Span<const float> values);

// The elements as little-endian bytes of the tensor's dtype, whatever the
// storage form (a copy when the values are in typed fields).
std::string OnnxTensorBytes(const onnx::TensorProto& tensor, uint64_t count);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_TENSOR_DATA_H_
