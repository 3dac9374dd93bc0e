#include "server/methods/abs_sum.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

namespace bonsai::methods {
namespace {

constexpr int64_t kLanes = 4;
using Lanes = std::array<double, kLanes>;

double Combine(const Lanes& lane) { return (lane[0] + lane[1]) + (lane[2] + lane[3]); }

// Calls fn(r, row) with each row's values in column order: spans of storage
// when rows are contiguous, else copies made a tile of rows at a time so
// that storage is still read in order.
template <typename Fn>
void ForEachRowSpan(const MatrixGeometry& g, absl::Span<const float> values, Fn&& fn) {
  const int64_t cols = g.cols();
  if (RowsAreContiguous(g)) {
    for (int64_t r = 0; r < g.rows; ++r) fn(r, values.subspan(r * g.row_stride, cols));
    return;
  }
  // A tile row is padded by a cache line: rows of a power-of-two length
  // would all map to the same cache set and evict each other as the
  // columns are scattered into them.
  constexpr int64_t kTileRows = 64, kPad = 16;
  const int64_t ld = cols + kPad;
  std::vector<float> tile(kTileRows * ld);
  for (int64_t first = 0; first < g.rows; first += kTileRows) {
    const int64_t rows = std::min(kTileRows, g.rows - first);
    GatherRows(g, values, first, {absl::MakeSpan(tile), rows, cols, ld});
    for (int64_t r = 0; r < rows; ++r)
      fn(first + r, absl::MakeConstSpan(tile).subspan(r * ld, cols));
  }
}

}  // namespace

double RowAbsSum(absl::Span<const float> row) {
  Lanes lane{};
  const int64_t n = static_cast<int64_t>(row.size());
  const int64_t whole = n / kLanes * kLanes;
  for (int64_t c = 0; c < whole; c += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) lane[k] += std::fabs(static_cast<double>(row[c + k]));
  for (int64_t c = whole; c < n; ++c) lane[c % kLanes] += std::fabs(static_cast<double>(row[c]));
  return Combine(lane);
}

std::vector<double> RowAbsSums(const MatrixGeometry& g, absl::Span<const float> values) {
  std::vector<double> sums(g.rows);
  if (g.row_stride == 1) {
    // Rows side by side ([in, out]): storage order, each row's lanes kept
    // apart while the columns go by.
    std::vector<Lanes> lanes(g.rows, Lanes{});
    int64_t col = 0;
    for (int64_t ch = 0; ch < g.channels; ++ch)
      for (int64_t k = 0; k < g.kernel; ++k, ++col) {
        const float* column = values.data() + g.Offset(0, ch, k);
        const int64_t lane = col % kLanes;
        for (int64_t r = 0; r < g.rows; ++r) lanes[r][lane] += std::fabs(static_cast<double>(column[r]));
      }
    for (int64_t r = 0; r < g.rows; ++r) sums[r] = Combine(lanes[r]);
    return sums;
  }
  ForEachRowSpan(g, values, [&](int64_t r, absl::Span<const float> row) { sums[r] = RowAbsSum(row); });
  return sums;
}

double AbsSumOfAllRows(const MatrixGeometry& g, absl::Span<const float> values) {
  double all = 0.0;
  for (double row : RowAbsSums(g, values)) all += row;
  return all;
}

}  // namespace bonsai::methods
