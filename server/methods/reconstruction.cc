#include "server/methods/reconstruction.h"

namespace bonsai::methods {

absl::StatusOr<double> SumOfQuadraticForms(tensor::ConstMatrix x, tensor::ConstMatrix h,
                                           std::vector<float>& scratch) {
  scratch.resize(static_cast<size_t>(x.rows) * h.cols);
  tensor::Matrix xh = tensor::MatrixOf(absl::MakeSpan(scratch), x.rows, h.cols);
  if (auto s = tensor::Gemm(1.0f, x, tensor::Transpose::kNo, h, tensor::Transpose::kNo, 0.0f,
                            xh);
      !s.ok()) {
    return s;
  }
  double sum = 0.0;
  for (int64_t r = 0; r < x.rows; ++r)
    for (int64_t c = 0; c < x.cols; ++c)
      sum += static_cast<double>(x.data[r * x.ld + c]) * scratch[r * h.cols + c];
  return sum;
}

absl::StatusOr<double> SquaredNormTimesUpper(tensor::Matrix x, tensor::ConstMatrix u,
                                             tensor::Transpose trans_u) {
  if (auto s = tensor::MultiplyByUpperRight(u, trans_u, x); !s.ok()) return s;
  double sum = 0.0;
  for (int64_t r = 0; r < x.rows; ++r) sum += SumOfSquares(x.data.subspan(r * x.ld, x.cols));
  return sum;
}

double SumOfSquares(absl::Span<const float> v) {
  double sum = 0.0;
  for (float x : v) sum += static_cast<double>(x) * x;
  return sum;
}

}  // namespace bonsai::methods
