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

// What a change did to one tensor, for the report.
struct ChangeStats {
  uint64_t nonzero_before = 0, nonzero_after = 0;
  double norm2_before = 0.0;  // ||before||_F^2
  double diff2 = 0.0;         // ||before - after||_F^2

  // ||before - after||_F / ||before||_F; 0 when before is all zeros.
  double relative_error() const;
};

// Accumulates ChangeStats over a tensor fed in pieces (same positions in
// both spans), in double precision, in one pass.
class ChangeAccumulator {
 public:
  void Add(absl::Span<const float> before, absl::Span<const float> after);
  const ChangeStats& stats() const { return stats_; }

 private:
  ChangeStats stats_;
};

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_FLOAT_TENSOR_H_
