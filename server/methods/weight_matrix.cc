#include "server/methods/weight_matrix.h"

#include "absl/strings/str_cat.h"

namespace bonsai::methods {

absl::StatusOr<MatrixGeometry> GeometryOf(const WeightTensor& weight) {
  const std::string& name = weight.info->name;
  const std::vector<int64_t>& shape = weight.values->shape;
  const int rank = static_cast<int>(shape.size());
  if (rank < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' has rank ", rank,
        "; this method needs a weight matrix of rank >= 2. Exclude it from the selection."));
  }
  const formats::WeightLayout layout = weight.info->layout.value_or(formats::WeightLayout{});
  const int out_axis = layout.output_axis, red_axis = layout.reduction_axis;
  if (out_axis < 0 || out_axis >= rank || red_axis < 0 || red_axis >= rank ||
      out_axis == red_axis) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' has an invalid layout (output axis ", out_axis,
        ", reduction axis ", red_axis, ") for rank ", rank));
  }
  std::vector<int64_t> strides(rank, 1);
  for (int a = rank - 2; a >= 0; --a) strides[a] = strides[a + 1] * shape[a + 1];

  MatrixGeometry g;
  g.rows = shape[out_axis];
  g.channels = shape[red_axis];
  g.row_stride = strides[out_axis];
  g.channel_stride = strides[red_axis];
  // Kernel positions enumerate the remaining axes in order, last fastest.
  g.kernel_offsets = {0};
  for (int a = 0; a < rank; ++a) {
    if (a == out_axis || a == red_axis) continue;
    std::vector<int64_t> next;
    next.reserve(g.kernel_offsets.size() * shape[a]);
    for (int64_t base : g.kernel_offsets)
      for (int64_t i = 0; i < shape[a]; ++i) next.push_back(base + i * strides[a]);
    g.kernel_offsets = std::move(next);
  }
  g.kernel = static_cast<int64_t>(g.kernel_offsets.size());
  if (static_cast<uint64_t>(g.rows) * g.cols() != weight.values->values.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' has ", weight.values->values.size(),
        " values, which does not match its shape"));
  }
  return g;
}

std::optional<int64_t> UniformColumnStride(const MatrixGeometry& g) {
  if (g.kernel == 1) return g.channel_stride;
  const int64_t step = g.kernel_offsets[1] - g.kernel_offsets[0];
  for (int64_t k = 0; k < g.kernel; ++k)
    if (g.kernel_offsets[k] != k * step) return std::nullopt;
  if (g.channel_stride != g.kernel * step) return std::nullopt;
  return step;
}

void GatherRows(const MatrixGeometry& g, absl::Span<const float> values, int64_t first,
                tensor::Matrix out) {
  if (g.row_stride == 1) {
    // Neighbouring rows are neighbours in storage ([in, out]): copying a
    // column at a time reads storage in order instead of one float per line.
    // Columns lie far apart, each a short run the hardware does not fetch
    // ahead, so the run a few columns on is asked for early.
    constexpr int64_t kAhead = 8;
    std::vector<const float*> column(g.cols());
    for (int64_t ch = 0, col = 0; ch < g.channels; ++ch)
      for (int64_t k = 0; k < g.kernel; ++k, ++col)
        column[col] = values.data() + g.Offset(first, ch, k);
    for (int64_t col = 0; col < g.cols(); ++col) {
      if (col + kAhead < g.cols())
        for (int64_t r = 0; r < out.rows; r += 16) __builtin_prefetch(column[col + kAhead] + r);
      const float* src = column[col];
      for (int64_t r = 0; r < out.rows; ++r) out.data[r * out.ld + col] = src[r];
    }
    return;
  }
  for (int64_t r = 0; r < out.rows; ++r) {
    float* dst = out.data.data() + r * out.ld;
    for (int64_t ch = 0; ch < g.channels; ++ch)
      for (int64_t k = 0; k < g.kernel; ++k)
        *dst++ = values[g.Offset(first + r, ch, k)];
  }
}

void ScatterRows(const MatrixGeometry& g, tensor::ConstMatrix rows, int64_t first,
                 absl::Span<float> values) {
  if (g.row_stride == 1) {
    // A column at a time, for the reason GatherRows gives.
    for (int64_t ch = 0, col = 0; ch < g.channels; ++ch)
      for (int64_t k = 0; k < g.kernel; ++k, ++col) {
        float* dst = values.data() + g.Offset(first, ch, k);
        for (int64_t r = 0; r < rows.rows; ++r) dst[r] = rows.data[r * rows.ld + col];
      }
    return;
  }
  for (int64_t r = 0; r < rows.rows; ++r) {
    const float* src = rows.data.data() + r * rows.ld;
    for (int64_t ch = 0; ch < g.channels; ++ch)
      for (int64_t k = 0; k < g.kernel; ++k) values[g.Offset(first + r, ch, k)] = *src++;
  }
}

}  // namespace bonsai::methods
