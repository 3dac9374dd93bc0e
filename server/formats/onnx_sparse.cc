#include "server/formats/onnx_sparse.h"

#include <cstring>
#include <string>

#include "server/formats/onnx_tensor_data.h"

namespace bonsai::formats {
namespace {

bool IsPositiveZero(const char* element, size_t width) {
  for (size_t i = 0; i < width; ++i) {
    if (element[i] != 0) return false;
  }
  return true;
}

}  // namespace

std::optional<onnx::SparseTensorProto> SparsifyOnnxTensor(const onnx::TensorProto& dense,
                                                          uint64_t count) {
  const size_t width = tensor::DTypeSize(DTypeFromOnnx(dense.data_type()));
  if (width == 0 || count == 0) return std::nullopt;
  const std::string bytes = OnnxTensorBytes(dense, count);
  uint64_t nonzero = 0;
  for (uint64_t i = 0; i < count; ++i) nonzero += !IsPositiveZero(bytes.data() + i * width, width);
  if (nonzero * (width + 8) >= count * width) return std::nullopt;

  onnx::SparseTensorProto sparse;
  *sparse.mutable_dims() = dense.dims();
  onnx::TensorProto* values = sparse.mutable_values();
  values->set_name(dense.name());
  values->set_data_type(dense.data_type());
  values->add_dims(static_cast<int64_t>(nonzero));
  std::string* value_bytes = values->mutable_raw_data();
  value_bytes->resize(nonzero * width);
  onnx::TensorProto* indices = sparse.mutable_indices();
  indices->set_data_type(onnx::TensorProto::INT64);
  indices->add_dims(static_cast<int64_t>(nonzero));
  std::string* index_bytes = indices->mutable_raw_data();
  index_bytes->resize(nonzero * 8);
  uint64_t next = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const char* element = bytes.data() + i * width;
    if (IsPositiveZero(element, width)) continue;
    std::memcpy(value_bytes->data() + next * width, element, width);
    const int64_t index = static_cast<int64_t>(i);  // little-endian, as raw_data requires
    std::memcpy(index_bytes->data() + next * 8, &index, 8);
    ++next;
  }
  return sparse;
}

}  // namespace bonsai::formats
