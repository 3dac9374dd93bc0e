#include "server/tensor/float_tensor.h"

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

double RelativeFrobeniusError(absl::Span<const float> before,
                              absl::Span<const float> after) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < before.size(); ++i) {
    const double d = static_cast<double>(before[i]) - static_cast<double>(after[i]);
    diff += d * d;
    norm += static_cast<double>(before[i]) * before[i];
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : 0.0;
}

}  // namespace bonsai::tensor
