// Element types bonsai reads and writes, and the conversions between their
// storage and the float32 that every method computes in.
#ifndef BONSAI_SERVER_TENSOR_DTYPE_H_
#define BONSAI_SERVER_TENSOR_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace bonsai::tensor {

enum class DType { kF32, kF16, kBF16, kF64, kOther };

std::string_view DTypeName(DType dtype);  // "F32", "F16", "BF16", "F64", "OTHER"
size_t DTypeSize(DType dtype);            // bytes per element; 0 for kOther
bool IsFloating(DType dtype);             // kOther is not

float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);  // round to nearest even
float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);  // round to nearest even

// Decodes `count` little-endian elements of `dtype` at `src` into `dst`.
// `src` need not be aligned.
absl::Status DecodeToFloat(DType dtype, const void* src, size_t count,
                           absl::Span<float> dst);
// Encodes `src` as little-endian `dtype` at `dst` (unaligned allowed).
absl::Status EncodeFromFloat(DType dtype, absl::Span<const float> src,
                             void* dst);

// Like EncodeFromFloat, but writes only the elements whose value changed
// (decoded `dst` != `src`), so an F64 weight that a method kept stays exact
// instead of passing through float32.
absl::Status EncodeChangedFromFloat(DType dtype, absl::Span<const float> src,
                                    void* dst);

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_DTYPE_H_
