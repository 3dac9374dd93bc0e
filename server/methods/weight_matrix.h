// A weight seen as the matrix the methods reason about: one row per output
// channel, one column per position along which its dot products accumulate.
// For a Linear/Gemm weight that is [out, in]; for a Conv weight [out, in, kh,
// kw] it is [out, in*kh*kw] with the column of (c, y, x) at (c*kh + y)*kw + x,
// PyTorch's unfold order, which is also how calibration Gram matrices of
// conv inputs are laid out.
//
// The geometry maps (row, column) to an offset in the tensor's own storage,
// whatever its layout, so methods work in place without a transposed copy.
#ifndef BONSAI_SERVER_METHODS_WEIGHT_MATRIX_H_
#define BONSAI_SERVER_METHODS_WEIGHT_MATRIX_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/methods/method.h"
#include "server/tensor/blas.h"

namespace bonsai::methods {

struct MatrixGeometry {
  int64_t rows = 0;      // output channels
  int64_t channels = 0;  // length of the reduction axis (input channels)
  int64_t kernel = 1;    // positions per channel: the product of the other axes
  int64_t row_stride = 0;
  int64_t channel_stride = 0;
  std::vector<int64_t> kernel_offsets;  // storage offset of each kernel position

  int64_t cols() const { return channels * kernel; }
  int64_t Offset(int64_t row, int64_t channel, int64_t k) const {
    return row * row_stride + channel * channel_stride + kernel_offsets[k];
  }
  int64_t Offset(int64_t row, int64_t col) const {
    return Offset(row, col / kernel, col % kernel);
  }
};

// Calls fn(offset) for each column of `row`, in column order, without the
// division Offset(row, col) needs: elementwise methods spend most of their
// time there otherwise.
template <typename Fn>
void ForEachInRow(const MatrixGeometry& g, int64_t row, Fn&& fn) {
  const int64_t row_base = row * g.row_stride;
  for (int64_t channel = 0; channel < g.channels; ++channel) {
    const int64_t base = row_base + channel * g.channel_stride;
    for (int64_t k = 0; k < g.kernel; ++k) fn(base + g.kernel_offsets[k]);
  }
}

// The geometry of a weight of rank >= 2 from its layout; without a layout
// the weight is taken as PyTorch's [out, in, ...]. InvalidArgument naming the
// tensor when its rank or layout does not allow one.
absl::StatusOr<MatrixGeometry> GeometryOf(const WeightTensor& weight);

// The distance in storage between consecutive columns when it is the same
// everywhere (every Linear, Gemm, MatMul and Conv weight; not a ConvTranspose
// with a kernel larger than 1x1).
std::optional<int64_t> UniformColumnStride(const MatrixGeometry& geometry);

// Whether each row is one span of storage in column order, row r at
// r * row_stride: Linear/Gemm [out, in] and Conv [out, in, kh, kw] weights.
inline bool RowsAreContiguous(const MatrixGeometry& g) { return UniformColumnStride(g) == 1; }

// Whether each column is one span of storage, element (r, c) at c * rows + r:
// an ONNX MatMul weight [in, out].
inline bool ColumnsAreContiguous(const MatrixGeometry& g) {
  return g.row_stride == 1 && UniformColumnStride(g) == g.rows;
}

// Copies rows [first, first + out.rows) of the weight into `out` (rows x cols).
void GatherRows(const MatrixGeometry& geometry, absl::Span<const float> values,
                int64_t first, tensor::Matrix out);

// The reverse: writes `rows` (rows.rows x cols) back as rows [first, ...).
void ScatterRows(const MatrixGeometry& geometry, tensor::ConstMatrix rows, int64_t first,
                 absl::Span<float> values);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_WEIGHT_MATRIX_H_
