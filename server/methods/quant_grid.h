// The uniform quantization grid that rtn, gptq and sparsegpt's joint mode
// share, stated once so that the three cannot drift apart and a numpy
// reference can follow it to the bit (tests/e2e/reference_methods.py).
//
// A group of weights along the reduction axis gets a scale and an integer
// zero point; each weight becomes one of 2^bits codes q and is written back
// dequantized, w' = scale * (q - zero). Everything is float32 with
// round-half-to-even, so the result is the same on every IEEE machine:
//   lo = min(0, min w), hi = max(0, max w)        (the range holds 0)
//   asymmetric: scale = (hi - lo) / (2^b - 1), zero = clamp(rint(-lo / scale), 0, 2^b - 1)
//   symmetric:  scale = max(-lo, hi) / (2^(b-1) - 1), zero = 2^(b-1)
//   a scale of 0 (an all-zero group) becomes 1, so the group stays zero
//   q = clamp(rint(w / scale) + zero, 0, 2^b - 1)
// With an integer zero point, 0 is always a grid point: pruned weights stay
// exactly zero. The symmetric grid puts max|w| on a code exactly and never
// uses the lowest code (-2^(b-1)), as restricted-range int8 does; at 2 bits
// it is ternary.
#ifndef BONSAI_SERVER_METHODS_QUANT_GRID_H_
#define BONSAI_SERVER_METHODS_QUANT_GRID_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/formats/model.h"

namespace bonsai::methods {

inline constexpr int kQuantDefaultBits = 4;
inline constexpr int64_t kQuantDefaultGroupSize = 128;

struct QuantSpec {
  int bits = kQuantDefaultBits;
  bool symmetric = false;
  int64_t group_size = kQuantDefaultGroupSize;  // 0: one group per output channel

  float max_code() const { return static_cast<float>((1 << bits) - 1); }
  // Columns per group for a reduction axis of d columns.
  int64_t GroupColumns(int64_t d) const {
    return group_size > 0 && group_size < d ? group_size : d;
  }
};

struct Grid {
  float scale = 1.0f;
  float zero = 0.0f;
};

// The grid of a group from lo = min(0, min w) and hi = max(0, max w).
Grid ChooseGrid(float lo, float hi, const QuantSpec& spec);

// rint(x) for |x| <= 2^22 in the default rounding mode, without SSE4.1's
// roundps (the build targets plain x86-64, where std::nearbyint is a
// library call): adding 1.5 * 2^23 leaves no fraction bits. Larger |x| keep
// their sign and a magnitude >= 2^22, which every clamp below takes to the
// same end as rint would. Never -0.
inline float RoundHalfEven(float x) {
  constexpr float kShift = 12582912.0f;
  return (x + kShift) - kShift;
}

// w' for one weight on the grid: scale * (q - zero) computed as scale times
// rint(w / scale) clamped to [0 - zero, max_code - zero], the same small
// integer (0 - zero, not -zero, so that a zero code is +0 as q - zero is).
inline float Quantize(float w, const Grid& grid, float max_code) {
  const float t = RoundHalfEven(w / grid.scale);
  const float low = 0.0f - grid.zero, high = max_code - grid.zero;
  return grid.scale * (t < low ? low : (t > high ? high : t));
}

// min(0, min w) and max(0, max w) over a span, four lanes at a time.
void RangeWithZero(absl::Span<const float> values, float* lo, float* hi);

// Quantize over a span, four lanes at a time, equal to the scalar rule.
void QuantizeSpan(absl::Span<float> values, const Grid& grid, float max_code);

// Chooses the grid of each group of a row (contiguous, in column order)
// and quantizes it in place: round-to-nearest. The grids go to `grids`
// (one per group) when it is not null.
void QuantizeRow(absl::Span<float> row, const QuantSpec& spec, Grid* grids = nullptr);

// Groups per row of d columns.
inline int64_t GroupCount(int64_t d, const QuantSpec& spec) {
  const int64_t width = spec.GroupColumns(d);
  return width > 0 ? (d + width - 1) / width : 0;
}

// The packing hint of a quantized weight of `rows` x d from its grids
// (rows x GroupCount(d), row-major): what packed output stores beside the codes.
formats::PackingHint QuantizedPacking(const QuantSpec& spec, int64_t rows, int64_t d,
                                      const std::vector<Grid>& grids);

// InvalidArgument naming the tensor when a weight is NaN, infinite or so
// large (|w| >= 2^126) that a group's range would overflow.
absl::Status CheckQuantizable(absl::string_view method, absl::string_view tensor,
                              absl::Span<const float> values);

// Report note when the groups do not tile the reduction axis, e.g. "groups of
// 128 along 200 columns: the last group of each row has 72"; empty otherwise.
std::string GroupTailNote(int64_t d, const QuantSpec& spec);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_QUANT_GRID_H_
