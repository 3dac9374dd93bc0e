#include "server/formats/quant_codes.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace bonsai::formats {
namespace {

// rint for |x| <= 2^22 in the default rounding mode, the grid's own rule
// (methods/quant_grid.h); larger quotients are never codes.
float RoundHalfEven(float x) {
  constexpr float kShift = 12582912.0f;
  return (x + kShift) - kShift;
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

absl::StatusOr<QuantizedMatrix> QuantizedCodes(const std::string& name,
                                               const std::vector<int64_t>& shape,
                                               const WeightLayout& layout,
                                               absl::Span<const float> values,
                                               const QuantGrids& grids) {
  QuantizedMatrix m;
  m.grids = &grids;
  const bool in_out = layout.output_axis == 1 && layout.reduction_axis == 0;
  if (shape.size() < 2 || (!in_out && !(layout.output_axis == 0 && layout.reduction_axis == 1)) ||
      (in_out && shape.size() != 2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", name, "\" has a layout that packed quantized output cannot store "
        "(only [out, in, ...] and MatMul/Gemm [in, out] weights); ask for output dense"));
  }
  m.rows = shape[layout.output_axis];
  m.cols = static_cast<int64_t>(values.size()) / (m.rows > 0 ? m.rows : 1);
  const int64_t groups =
      grids.group_columns > 0 ? (m.cols + grids.group_columns - 1) / grids.group_columns : 0;
  if (grids.rows != m.rows || grids.groups != groups ||
      grids.scales.size() != static_cast<size_t>(m.rows * groups) ||
      grids.zeros.size() != grids.scales.size()) {
    return absl::InternalError(absl::StrCat("the grids of tensor \"", name,
                                            "\" do not match its shape"));
  }
  const float max_code = static_cast<float>((1 << grids.bits) - 1);
  m.codes.resize(values.size());
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t c = 0; c < m.cols; ++c) {
      const float value = in_out ? values[c * m.rows + r] : values[r * m.cols + c];
      const int64_t g = c / grids.group_columns;
      const float scale = grids.scales[r * groups + g], zero = grids.zeros[r * groups + g];
      const float t = RoundHalfEven(value / scale);
      const float code = t + zero;
      if (!(code >= 0.0f && code <= max_code) || !SameBits(scale * (code - zero), value)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor \"", name, "\": the weight at output channel ", r, ", column ", c,
            " is not on its quantization grid, so it cannot be stored packed; ask for "
            "output dense"));
      }
      m.codes[r * m.cols + c] = static_cast<uint8_t>(code);
    }
  }
  return m;
}

}  // namespace bonsai::formats
