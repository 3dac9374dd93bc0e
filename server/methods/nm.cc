#include "server/methods/nm.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "server/methods/selection.h"
#include "server/methods/simd.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {
namespace {

using simd::Bits;
using simd::Floats;
using simd::Masks;

// Four groups at once, one per lane: v[t] holds element t of each group.
// Element t is kept when fewer than n others beat it, an earlier one by
// being at least as large, a later one by being larger: KeepLargestN's
// rule, tie to the lower index, with float compares (a NaN neither beats
// nor is beaten) and no branch.
template <int M>
void KeepLargestNInLanes(Bits (&v)[M], int n) {
  Floats score[M];
#pragma GCC unroll 8
  for (int t = 0; t < M; ++t) score[t] = simd::AsFloats(v[t] & ~simd::kSignBit);
  const Masks keep_below = Masks{} - n;  // beaten counts are negative: true is -1
#pragma GCC unroll 8
  for (int t = 0; t < M; ++t) {
    Masks beaten = {};
#pragma GCC unroll 8
    for (int j = 0; j < M; ++j) {
      if (j < t) beaten += score[j] >= score[t];
      if (j > t) beaten += score[j] > score[t];
    }
    v[t] &= simd::AsBits(beaten > keep_below);
  }
}

// Moves element t of four 4-float rows into row t: applied twice, nothing.
void Transpose4x4(Bits& a, Bits& b, Bits& c, Bits& d) {
  const Bits ab_lo = __builtin_shufflevector(a, b, 0, 4, 1, 5);
  const Bits ab_hi = __builtin_shufflevector(a, b, 2, 6, 3, 7);
  const Bits cd_lo = __builtin_shufflevector(c, d, 0, 4, 1, 5);
  const Bits cd_hi = __builtin_shufflevector(c, d, 2, 6, 3, 7);
  a = __builtin_shufflevector(ab_lo, cd_lo, 0, 1, 4, 5);
  b = __builtin_shufflevector(ab_lo, cd_lo, 2, 3, 6, 7);
  c = __builtin_shufflevector(ab_hi, cd_hi, 0, 1, 4, 5);
  d = __builtin_shufflevector(ab_hi, cd_hi, 2, 3, 6, 7);
}

// Four groups end to end at p (a Linear weight's row): transposed in 4 x 4
// blocks so that each lane holds one group, and back.
template <int M>
void FourAdjacentGroups(float* p, int n) {
  Bits v[M];
#pragma GCC unroll 8
  for (int q = 0; q < M; q += 4) {
    for (int g = 0; g < 4; ++g) v[q + g] = simd::LoadBits(p + g * M + q);
    Transpose4x4(v[q], v[q + 1], v[q + 2], v[q + 3]);
  }
  KeepLargestNInLanes<M>(v, n);
#pragma GCC unroll 8
  for (int q = 0; q < M; q += 4) {
    Transpose4x4(v[q], v[q + 1], v[q + 2], v[q + 3]);
    for (int g = 0; g < 4; ++g) simd::StoreBits(p + g * M + q, v[q + g]);
  }
}

// Groups that start at base[0..lanes), element t of each at base + t *
// stride: loaded as vectors when they sit side by side (Conv kernel
// positions, [in, out] rows), else gathered.
template <int M>
void FourGroupsAt(float* values, const int64_t (&base)[4], int lanes, int64_t stride, int n) {
  Bits v[M];
  const bool side_by_side = lanes == 4 && base[1] == base[0] + 1 && base[2] == base[0] + 2 &&
                            base[3] == base[0] + 3;
  if (side_by_side) {
    for (int t = 0; t < M; ++t) v[t] = simd::LoadBits(values + base[0] + t * stride);
  } else {
    for (int t = 0; t < M; ++t) {
      float lane[4] = {};
      for (int l = 0; l < lanes; ++l) lane[l] = values[base[l] + t * stride];
      v[t] = simd::LoadBits(lane);
    }
  }
  KeepLargestNInLanes<M>(v, n);
  for (int t = 0; t < M; ++t) {
    if (side_by_side) {
      simd::StoreBits(values + base[0] + t * stride, v[t]);
    } else {
      float lane[4];
      simd::StoreBits(lane, v[t]);
      for (int l = 0; l < lanes; ++l) values[base[l] + t * stride] = lane[l];
    }
  }
}

// Every complete group, innermost along the axis whose neighbours are
// neighbours in storage, so memory is read in order and four consecutive
// groups usually sit side by side (or, along the channels, end to end).
template <int M>
void PruneGroups(const MatrixGeometry& g, float* values, int n) {
  const int64_t groups = g.channels / M, group_stride = M * g.channel_stride;
  const std::vector<int64_t>& kernel = g.kernel_offsets;
  if (g.channel_stride == 1) {
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t k = 0; k < g.kernel; ++k) {
        float* p = values + r * g.row_stride + kernel[k];
        int64_t q = 0;
        for (; q + 4 <= groups; q += 4) FourAdjacentGroups<M>(p + q * M, n);
        for (; q < groups; ++q) FourGroupsAt<M>(p, {q * M}, 1, 1, n);
      }
    return;
  }
  int64_t base[4];
  int lanes = 0;
  auto visit = [&](int64_t at) {
    base[lanes++] = at;
    if (lanes == 4) {
      FourGroupsAt<M>(values, base, 4, g.channel_stride, n);
      lanes = 0;
    }
  };
  if (g.row_stride == 1) {
    for (int64_t q = 0; q < groups; ++q)
      for (int64_t k = 0; k < g.kernel; ++k)
        for (int64_t r = 0; r < g.rows; ++r) visit(r + q * group_stride + kernel[k]);
  } else {
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t q = 0; q < groups; ++q)
        for (int64_t k = 0; k < g.kernel; ++k)
          visit(r * g.row_stride + q * group_stride + kernel[k]);
  }
  if (lanes > 0) FourGroupsAt<M>(values, base, lanes, g.channel_stride, n);
}

// Any m up to 32, one group at a time.
void PruneGroupsOneByOne(const MatrixGeometry& g, absl::Span<float> values, int n, int m) {
  std::vector<int64_t> offsets(m);
  std::vector<float> scores(m);
  std::unique_ptr<bool[]> keep(new bool[m]);
  const int64_t grouped = GroupedChannels(g.channels, m);
  for (int64_t r = 0; r < g.rows; ++r) {
    for (int64_t k = 0; k < g.kernel; ++k) {
      for (int64_t first = 0; first < grouped; first += m) {
        for (int t = 0; t < m; ++t) {
          offsets[t] = g.Offset(r, first + t, k);
          scores[t] = std::fabs(values[offsets[t]]);
        }
        KeepLargestN(scores, n, absl::MakeSpan(keep.get(), m));
        for (int t = 0; t < m; ++t)
          if (!keep[t]) values[offsets[t]] = 0.0f;
      }
    }
  }
}

}  // namespace

absl::StatusOr<MethodOutcome> NMMethod::Apply(const WeightTensor& weight,
                                              const ProgressTick& tick) {
  absl::StatusOr<MatrixGeometry> geometry = GeometryOf(weight);
  if (!geometry.ok()) return geometry.status();
  const MatrixGeometry& g = *geometry;
  absl::Span<float> values = weight.values->span();
  if (m_ == 4) {
    PruneGroups<4>(g, values.data(), n_);
  } else if (m_ == 8) {
    PruneGroups<8>(g, values.data(), n_);
  } else {
    PruneGroupsOneByOne(g, values, n_, m_);
  }
  return SparsityOutcome(g.channels, n_, m_);
}

}  // namespace bonsai::methods
