#include "server/methods/ordered_sum.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace bonsai::methods {
namespace {

double AddAbsOneByOne(double sum, const float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) sum += std::fabs(v[i]);
  return sum;
}

#if defined(__SSE2__)
// Two shortcuts, each taken only when it provably gives the one-by-one
// result, for a block of floats at a time; a block that fits neither is
// added one by one. All addends are >= 0, so every partial sum lies between
// the starting sum and the final one, and rounding to nearest is monotone:
// if any partial sum would reach a bound 2^b, whatever order computed it,
// the computed total reaches 2^b too. That makes the checks below safe.
constexpr int64_t kBlock = 256;        // floats per shortcut step
constexpr int64_t kWholeSpan = 16384;  // a span this short tries one exact step

double Pow2(int e) { return std::bit_cast<double>(static_cast<uint64_t>(e + 1023) << 52); }

// Exponent of the lowest set bit of a finite double > 0.
int LowestBitExponent(double x) {
  const uint64_t bits = std::bit_cast<uint64_t>(x);
  const int biased = static_cast<int>(bits >> 52);
  uint64_t significand = bits & ((uint64_t{1} << 52) - 1);
  if (biased != 0) significand |= uint64_t{1} << 52;
  return std::max(biased, 1) - 1075 + std::countr_zero(significand);
}

// Shortcut 1, exact: when the sum and every addend are multiples of 2^q and
// the total stays below 2^(53+q), no addition rounds, in any order. The
// usual case for a row from zero: a float's last bit is 2^-23 of it, and a
// row rarely sums to 2^30 times its smallest nonzero weight. n is a
// multiple of 8.
bool TryExactBlock(double& sum, const float* v, int64_t n) {
  const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  const __m128 inf = _mm_set1_ps(INFINITY), zero = _mm_setzero_ps();
  __m128d acc0 = _mm_setzero_pd(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  __m128 least = inf;  // smallest nonzero |v|: its last bit bounds q
  for (int64_t i = 0; i < n; i += 8) {
    const __m128 a = _mm_and_ps(_mm_loadu_ps(v + i), abs_mask);
    const __m128 b = _mm_and_ps(_mm_loadu_ps(v + i + 4), abs_mask);
    acc0 = _mm_add_pd(acc0, _mm_cvtps_pd(a));
    acc1 = _mm_add_pd(acc1, _mm_cvtps_pd(_mm_movehl_ps(a, a)));
    acc2 = _mm_add_pd(acc2, _mm_cvtps_pd(b));
    acc3 = _mm_add_pd(acc3, _mm_cvtps_pd(_mm_movehl_ps(b, b)));
    least = _mm_min_ps(least, _mm_or_ps(a, _mm_and_ps(_mm_cmpeq_ps(a, zero), inf)));
    least = _mm_min_ps(least, _mm_or_ps(b, _mm_and_ps(_mm_cmpeq_ps(b, zero), inf)));
  }
  const __m128d acc = _mm_add_pd(_mm_add_pd(acc0, acc1), _mm_add_pd(acc2, acc3));
  const double block = _mm_cvtsd_f64(_mm_add_sd(acc, _mm_unpackhi_pd(acc, acc)));
  least = _mm_min_ps(least, _mm_movehl_ps(least, least));
  least = _mm_min_ss(least, _mm_shuffle_ps(least, least, 1));
  const uint32_t least_bits = std::bit_cast<uint32_t>(_mm_cvtss_f32(least));

  int q = 2000;  // no constraint yet
  if (least_bits < 0x7f800000) q = std::max<int>(least_bits >> 23, 1) - 150;  // float's last bit
  if (sum != 0) q = std::min(q, LowestBitExponent(sum));
  const double total = sum + block;
  const bool exact = q == 2000 ? total == 0  // sum == 0 and every |v| == 0
                                : q <= 900 && total < Pow2(53 + q);
  if (!exact) return false;
  sum = total;
  return true;
}

// (|v| + 2^e) - 2^e: |v| rounded to a multiple of 2^(e-52), halves to even.
__m128d RoundToUlp(__m128d a, __m128d binade) {
  return _mm_sub_pd(_mm_add_pd(a, binade), binade);
}

// Shortcut 2, one binade: while the sum stays in [2^e, 2^(e+1)) its last
// bit is u = 2^(e-52), and sum + a rounds a to a multiple of u on its own,
// the same whatever the sum; only an exact half (a tie) depends on it,
// rounding to make the sum's last bit even. So the block adds up as its
// rounded addends, with ties settled in order from the exact partial sum.
// n is a multiple of 16; the sum is > 0.
bool TryOneBinadeBlock(double& sum, const float* v, int64_t n) {
  const int e = static_cast<int>(std::bit_cast<uint64_t>(sum) >> 52) - 1023;
  if (e < -900 || e > 900) return false;
  const double binade = Pow2(e), half_ulp = Pow2(e - 53);
  const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  const __m128d abs_mask_d = _mm_castsi128_pd(_mm_set1_epi64x(0x7fffffffffffffff));
  const __m128d vbinade = _mm_set1_pd(binade), vhalf = _mm_set1_pd(half_ulp);
  __m128d acc = _mm_setzero_pd();
  double ties = 0.0, fix = 0.0;  // tie count, and the ulps ties added beyond their rounding
  for (int64_t i = 0; i < n; i += 16) {
    __m128d group = _mm_setzero_pd(), tie = _mm_setzero_pd();
    for (int64_t j = i; j < i + 16; j += 4) {
      const __m128 a = _mm_and_ps(_mm_loadu_ps(v + j), abs_mask);
      const __m128d a0 = _mm_cvtps_pd(a), a1 = _mm_cvtps_pd(_mm_movehl_ps(a, a));
      const __m128d r0 = RoundToUlp(a0, vbinade), r1 = RoundToUlp(a1, vbinade);
      const __m128d d0 = _mm_and_pd(_mm_sub_pd(a0, r0), abs_mask_d);
      const __m128d d1 = _mm_and_pd(_mm_sub_pd(a1, r1), abs_mask_d);
      tie = _mm_or_pd(tie, _mm_or_pd(_mm_cmpeq_pd(d0, vhalf), _mm_cmpeq_pd(d1, vhalf)));
      group = _mm_add_pd(group, _mm_add_pd(r0, r1));
    }
    if (_mm_movemask_pd(tie) != 0) {
      // Rare: replay the group from the exact sum so far.
      double partial = sum + _mm_cvtsd_f64(_mm_add_sd(acc, _mm_unpackhi_pd(acc, acc))) + fix;
      for (int64_t j = i; j < i + 16; ++j) {
        const double a = std::fabs(v[j]);
        const double r = (a + binade) - binade;
        const double d = a - r;
        if (d == half_ulp || d == -half_ulp) {
          ties += 1.0;
          // r is the even multiple of u; an odd sum needs the other one.
          if (std::bit_cast<uint64_t>(partial + r) & 1) {
            fix += 2.0 * d;
            partial += 2.0 * d;
          }
        }
        partial += r;
      }
    }
    acc = _mm_add_pd(acc, group);
  }
  const double rounded = sum + _mm_cvtsd_f64(_mm_add_sd(acc, _mm_unpackhi_pd(acc, acc)));
  // Ties add at most one ulp each beyond their rounding: below 2^(e+1) with
  // that margin, every partial sum stayed in the binade and was exact.
  if (!(rounded + ties * 2.0 * half_ulp < 2.0 * binade)) return false;
  sum = rounded + fix;
  return true;
}
#endif  // __SSE2__

}  // namespace

double AddAbsInOrder(double sum, absl::Span<const float> values) {
  const float* v = values.data();
  const int64_t n = static_cast<int64_t>(values.size());
  int64_t done = 0;
#if defined(__SSE2__)
  if (!(sum >= 0.0) || std::isinf(sum)) return AddAbsOneByOne(sum, v, n);
  const int64_t whole = n / 8 * 8;
  if (sum == 0.0 && n <= kWholeSpan && TryExactBlock(sum, v, whole)) {
    done = whole;
  } else {
    for (; done + kBlock <= n; done += kBlock) {
      const float* block = v + done;
      if (sum > 0.0 && TryOneBinadeBlock(sum, block, kBlock)) continue;
      if (TryExactBlock(sum, block, kBlock)) continue;
      sum = AddAbsOneByOne(sum, block, kBlock);
    }
  }
#endif
  return AddAbsOneByOne(sum, v + done, n - done);
}

namespace {

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

std::vector<double> RowAbsSums(const MatrixGeometry& g, absl::Span<const float> values) {
  std::vector<double> sums(g.rows);
  if (g.row_stride == 1) {
    // Rows side by side ([in, out]): storage order, a running sum per row.
    // Each still adds its row in column order, and the rows' adds do not
    // wait on each other.
    for (int64_t ch = 0; ch < g.channels; ++ch)
      for (int64_t k = 0; k < g.kernel; ++k) {
        const float* column = values.data() + g.Offset(0, ch, k);
        for (int64_t r = 0; r < g.rows; ++r) sums[r] += std::fabs(column[r]);
      }
    return sums;
  }
  ForEachRowSpan(g, values, [&](int64_t r, absl::Span<const float> row) {
    sums[r] = AddAbsInOrder(0.0, row);
  });
  return sums;
}

double AddAbsOfAllRows(double sum, const MatrixGeometry& g, absl::Span<const float> values) {
  if (RowsAreContiguous(g) && g.row_stride == g.cols())  // the whole weight is one span
    return AddAbsInOrder(sum, values.subspan(0, g.rows * g.cols()));
  ForEachRowSpan(g, values, [&](int64_t, absl::Span<const float> row) {
    sum = AddAbsInOrder(sum, row);
  });
  return sum;
}

}  // namespace bonsai::methods
