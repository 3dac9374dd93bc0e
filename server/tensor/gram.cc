#include "server/tensor/gram.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "server/tensor/blas.h"

namespace bonsai::tensor {

constexpr int64_t kRowsPerSlice = 4096;

absl::Status AddRowsToGram(DType dtype, const char* rows, int64_t n, int64_t d,
                           absl::Span<float> gram) {
  const size_t element = DTypeSize(dtype);
  std::vector<float> slice;
  for (int64_t first = 0; first < n; first += kRowsPerSlice) {
    const int64_t count = std::min(kRowsPerSlice, n - first);
    slice.resize(static_cast<size_t>(count) * d);
    const size_t offset = static_cast<size_t>(first) * d * element;
    if (auto s = DecodeToFloat(dtype, rows + offset, slice.size(), absl::MakeSpan(slice)); !s.ok()) {
      return s;
    }
    if (auto s = GramUpdate(1.0f, MatrixOf(absl::MakeConstSpan(slice), count, d), 1.0f,
                            MatrixOf(gram, d, d));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status AddEncodedMatrix(DType dtype, const char* data, absl::Span<float> gram) {
  std::vector<float> decoded(gram.size());
  if (auto s = DecodeToFloat(dtype, data, decoded.size(), absl::MakeSpan(decoded)); !s.ok()) return s;
  for (size_t i = 0; i < gram.size(); ++i) gram[i] += decoded[i];
  return absl::OkStatus();
}

bool AllFinite(absl::Span<const float> values) {
  return std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); });
}

}  // namespace bonsai::tensor
