#include "server/tensor/float_tensor.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace bonsai::tensor {

bool ElementCount(absl::Span<const int64_t> shape, uint64_t* count) {
  uint64_t total = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return false;
    if (dim != 0 && total > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim)) {
      return false;
    }
    total *= static_cast<uint64_t>(dim);
  }
  *count = total;
  return true;
}

uint64_t CountNonZero(absl::Span<const float> values) {
  uint64_t count = 0;
  for (float v : values) count += (v != 0.0f);
  return count;
}

double ChangeStats::relative_error() const {
  return norm2_before > 0.0 ? std::sqrt(diff2 / norm2_before) : 0.0;
}

// Eight independent lanes of sums let the compiler vectorise a
// floating-point reduction it may not reorder itself.
void ChangeAccumulator::Add(absl::Span<const float> before, absl::Span<const float> after) {
  constexpr size_t kLanes = 8;
  double diff[kLanes] = {}, norm[kLanes] = {};
  uint64_t nonzero_before[kLanes] = {}, nonzero_after[kLanes] = {};
  const size_t n = std::min(before.size(), after.size());
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) {
      const double b = before[i + j], a = after[i + j];
      diff[j] += (b - a) * (b - a);
      norm[j] += b * b;
      nonzero_before[j] += before[i + j] != 0.0f;
      nonzero_after[j] += after[i + j] != 0.0f;
    }
  }
  for (size_t j = 0; i + j < n; ++j) {
    const double b = before[i + j], a = after[i + j];
    diff[j] += (b - a) * (b - a);
    norm[j] += b * b;
    nonzero_before[j] += before[i + j] != 0.0f;
    nonzero_after[j] += after[i + j] != 0.0f;
  }
  for (size_t j = 0; j < kLanes; ++j) {
    stats_.diff2 += diff[j];
    stats_.norm2_before += norm[j];
    stats_.nonzero_before += nonzero_before[j];
    stats_.nonzero_after += nonzero_after[j];
  }
}

}  // namespace bonsai::tensor
