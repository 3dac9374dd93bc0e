// The integer codes behind a quantized weight (Packing::kQuantized), for the
// packed layouts of safetensors and ONNX. A method leaves the dequantized
// float32 values scale * (q - zero) and its grids; the code of each weight is
// rint(value / scale) + zero, and it is only taken when scale * (code - zero)
// gives the value back bit for bit, so that every packed layout decodes to
// exactly the dense output.
#ifndef BONSAI_SERVER_FORMATS_QUANT_CODES_H_
#define BONSAI_SERVER_FORMATS_QUANT_CODES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/formats/model.h"

namespace bonsai::formats {

// A quantized weight as the matrix its groups run along: rows are output
// channels, columns the reduction axis (in * kh * kw for a Conv weight).
struct QuantizedMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes;  // rows x cols, row-major
  const QuantGrids* grids = nullptr;

  int64_t group_of(int64_t col) const { return col / grids->group_columns; }
  float scale(int64_t row, int64_t group) const { return grids->scales[row * grids->groups + group]; }
  uint8_t zero(int64_t row, int64_t group) const {
    return static_cast<uint8_t>(grids->zeros[row * grids->groups + group]);
  }
};

// The codes of `values` (a tensor of `shape` with `layout`) on `grids`.
// Layouts: [out, in, ...] (output axis 0, reduction 1) and [in, out]
// (MatMul/Gemm B). InvalidArgument naming the tensor when the layout is
// another or a value is not on its grid.
absl::StatusOr<QuantizedMatrix> QuantizedCodes(const std::string& name,
                                               const std::vector<int64_t>& shape,
                                               const WeightLayout& layout,
                                               absl::Span<const float> values,
                                               const QuantGrids& grids);

// Bits per weight of a packed tensor of `params` weights stored in `bytes`.
inline double BitsPerWeight(uint64_t bytes, uint64_t params) {
  return params ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0.0;
}

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_QUANT_CODES_H_
