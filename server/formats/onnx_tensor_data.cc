#include "server/formats/onnx_tensor_data.h"

#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "server/tensor/float_tensor.h"

namespace bonsai::formats {
namespace {

using onnx::TensorProto;

bool IsHalfWidth(tensor::DType dtype) {
  return dtype == tensor::DType::kF16 || dtype == tensor::DType::kBF16;
}

int TypedSize(const TensorProto& tensor, tensor::DType dtype) {
  switch (dtype) {
    case tensor::DType::kF32: return tensor.float_data_size();
    case tensor::DType::kF64: return tensor.double_data_size();
    case tensor::DType::kF16:
    case tensor::DType::kBF16: return tensor.int32_data_size();
    case tensor::DType::kOther: break;
  }
  return 0;
}

}  // namespace

tensor::DType DTypeFromOnnx(int32_t data_type) {
  switch (data_type) {
    case TensorProto::FLOAT: return tensor::DType::kF32;
    case TensorProto::FLOAT16: return tensor::DType::kF16;
    case TensorProto::BFLOAT16: return tensor::DType::kBF16;
    case TensorProto::DOUBLE: return tensor::DType::kF64;
    default: return tensor::DType::kOther;
  }
}

uint64_t OnnxElementCount(const TensorProto& tensor) {
  uint64_t count = 0;
  return tensor::ElementCount(tensor.dims(), &count) ? count : 0;
}

absl::Status CheckOnnxTensorStorage(const TensorProto& tensor, absl::string_view name,
                                    uint64_t* count) {
  if (tensor.data_location() == TensorProto::EXTERNAL) {
    // Where the bytes are is the model's to resolve among the uploaded files
    // (onnx_external_data.h); only the shape is checked here.
    if (!tensor::ElementCount(tensor.dims(), count)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", name, "\" has a negative dimension or a shape whose size overflows"));
    }
    return absl::OkStatus();
  }
  if (tensor.has_segment()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", name, "\" is a segment of a larger tensor, which bonsai does not accept; "
        "save the model with whole tensors"));
  }
  if (!tensor::ElementCount(tensor.dims(), count)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", name, "\" has a negative dimension or a shape whose size overflows"));
  }
  const tensor::DType dtype = DTypeFromOnnx(tensor.data_type());
  if (!tensor::IsFloating(dtype)) return absl::OkStatus();  // kept as is, never read
  const size_t width = tensor::DTypeSize(dtype);
  if (tensor.has_raw_data()) {
    if (*count > std::numeric_limits<uint64_t>::max() / width ||
        tensor.raw_data().size() != *count * width) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", name, "\" has ", tensor.raw_data().size(), " bytes of raw_data but its ",
          "shape and dtype need ", *count, " elements of ", width,
          " bytes; re-export the model"));
    }
    return absl::OkStatus();
  }
  if (static_cast<uint64_t>(TypedSize(tensor, dtype)) != *count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", name, "\" holds ", TypedSize(tensor, dtype), " values but its shape needs ",
        *count, "; re-export the model"));
  }
  return absl::OkStatus();
}

absl::Status ReadOnnxTensor(const TensorProto& tensor, absl::Span<float> out) {
  const tensor::DType dtype = DTypeFromOnnx(tensor.data_type());
  if (tensor.has_raw_data()) {
    return tensor::DecodeToFloat(dtype, tensor.raw_data().data(), out.size(), out);
  }
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype) {
      case tensor::DType::kF32: out[i] = tensor.float_data(i); break;
      case tensor::DType::kF64: out[i] = static_cast<float>(tensor.double_data(i)); break;
      case tensor::DType::kF16: out[i] = tensor::HalfToFloat(tensor.int32_data(i) & 0xffff); break;
      case tensor::DType::kBF16:
        out[i] = tensor::BFloat16ToFloat(tensor.int32_data(i) & 0xffff);
        break;
      case tensor::DType::kOther:
        return absl::InvalidArgumentError("cannot read a non-floating tensor");
    }
  }
  return absl::OkStatus();
}

absl::Status WriteOnnxTensor(TensorProto& tensor, absl::Span<const float> values) {
  const tensor::DType dtype = DTypeFromOnnx(tensor.data_type());
  if (tensor.has_raw_data()) {
    return tensor::EncodeChangedFromFloat(dtype, values, tensor.mutable_raw_data()->data());
  }
  // Typed fields: as EncodeChangedFromFloat does, an unchanged value keeps
  // its stored form, so a kept double stays exact.
  for (size_t i = 0; i < values.size(); ++i) {
    const int index = static_cast<int>(i);
    const uint32_t wanted = std::bit_cast<uint32_t>(values[i]);
    switch (dtype) {
      case tensor::DType::kF32:
        tensor.set_float_data(index, values[i]);
        break;
      case tensor::DType::kF64:
        if (std::bit_cast<uint32_t>(static_cast<float>(tensor.double_data(index))) != wanted) {
          tensor.set_double_data(index, values[i]);
        }
        break;
      case tensor::DType::kF16:
      case tensor::DType::kBF16: {
        const bool half = dtype == tensor::DType::kF16;
        const uint16_t bits = static_cast<uint16_t>(tensor.int32_data(index) & 0xffff);
        const float current = half ? tensor::HalfToFloat(bits) : tensor::BFloat16ToFloat(bits);
        if (std::bit_cast<uint32_t>(current) != wanted) {
          tensor.set_int32_data(index, half ? tensor::FloatToHalf(values[i])
                                            : tensor::FloatToBFloat16(values[i]));
        }
        break;
      }
      case tensor::DType::kOther:
        return absl::InvalidArgumentError("cannot write a non-floating tensor");
    }
  }
  return absl::OkStatus();
}

std::string OnnxTensorBytes(const TensorProto& tensor, uint64_t count) {
  if (tensor.has_raw_data()) return tensor.raw_data();
  const tensor::DType dtype = DTypeFromOnnx(tensor.data_type());
  const size_t width = tensor::DTypeSize(dtype);
  std::string bytes(count * width, '\0');
  for (uint64_t i = 0; i < count; ++i) {
    const int index = static_cast<int>(i);
    char* out = bytes.data() + i * width;
    if (dtype == tensor::DType::kF32) {
      const float value = tensor.float_data(index);
      std::memcpy(out, &value, 4);
    } else if (dtype == tensor::DType::kF64) {
      const double value = tensor.double_data(index);
      std::memcpy(out, &value, 8);
    } else if (IsHalfWidth(dtype)) {
      const uint16_t bits = static_cast<uint16_t>(tensor.int32_data(index) & 0xffff);
      std::memcpy(out, &bits, 2);
    }
  }
  return bytes;
}

}  // namespace bonsai::formats
