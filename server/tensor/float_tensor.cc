#include "server/tensor/float_tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

double ChangeStats::relative_error() const {
  return norm2_before > 0.0 ? std::sqrt(diff2 / norm2_before) : 0.0;
}

namespace {

// Two doubles per register (SSE2, the build's baseline): written out with
// GCC's vector types because the compiler may not reorder a floating-point
// sum into lanes by itself, and a scalar sum waits on every add.
using Doubles = double __attribute__((vector_size(16)));
using FloatPair = float __attribute__((vector_size(8)));

Doubles LoadPair(const float* p) {
  FloatPair pair;
  std::memcpy(&pair, p, sizeof(pair));
  return __builtin_convertvector(pair, Doubles);
}

constexpr size_t kCountBlock = 1024;

// Non-zeros of a block of known length: a fixed trip count vectorises.
template <size_t kLength>
uint32_t NonZerosIn(const float* values) {
  uint32_t count = 0;
  for (size_t i = 0; i < kLength; ++i) count += values[i] != 0.0f;
  return count;
}

}  // namespace

uint64_t CountNonZero(absl::Span<const float> values) {
  uint64_t count = 0;
  size_t i = 0;
  for (; i + kCountBlock <= values.size(); i += kCountBlock) {
    count += NonZerosIn<kCountBlock>(values.data() + i);
  }
  for (; i < values.size(); ++i) count += values[i] != 0.0f;
  return count;
}

void ChangeAccumulator::Add(absl::Span<const float> before, absl::Span<const float> after) {
  const size_t n = std::min(before.size(), after.size());
  Doubles diff[2] = {}, norm[2] = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (size_t half = 0; half < 2; ++half) {
      const Doubles b = LoadPair(before.data() + i + 2 * half);
      const Doubles d = b - LoadPair(after.data() + i + 2 * half);
      diff[half] += d * d;
      norm[half] += b * b;
    }
  }
  for (size_t half = 0; half < 2; ++half) {
    stats_.diff2 += diff[half][0] + diff[half][1];
    stats_.norm2_before += norm[half][0] + norm[half][1];
  }
  for (; i < n; ++i) {
    const double b = before[i], d = b - static_cast<double>(after[i]);
    stats_.diff2 += d * d;
    stats_.norm2_before += b * b;
  }
  stats_.nonzero_before += CountNonZero(before.subspan(0, n));
  stats_.nonzero_after += CountNonZero(after.subspan(0, n));
}

}  // namespace bonsai::tensor
