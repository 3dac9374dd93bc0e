// The working form of one weight: float32 values in row-major order with
// their shape. Every method computes on this, whatever the stored dtype.
#ifndef BONSAI_SERVER_TENSOR_FLOAT_TENSOR_H_
#define BONSAI_SERVER_TENSOR_FLOAT_TENSOR_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace bonsai::tensor {

struct FloatTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;

  absl::Span<float> span() { return absl::MakeSpan(values); }
  absl::Span<const float> span() const { return absl::MakeConstSpan(values); }
  size_t size() const { return values.size(); }
};

// Product of the dimensions; false when it overflows or a dimension is < 0.
bool ElementCount(absl::Span<const int64_t> shape, uint64_t* count);

uint64_t CountNonZero(absl::Span<const float> values);

// ||a - b||_F / ||a||_F in double precision; 0 when a is all zeros.
double RelativeFrobeniusError(absl::Span<const float> before,
                              absl::Span<const float> after);

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_FLOAT_TENSOR_H_
