// Reconstruction error on calibration inputs from their Gram matrix alone:
// ||W X^T - W' X^T||^2 = tr(dW H dW^T) with H = X^T X, so the activations
// themselves are never needed, only rows of weights and H.
#ifndef BONSAI_SERVER_METHODS_RECONSTRUCTION_H_
#define BONSAI_SERVER_METHODS_RECONSTRUCTION_H_

#include <vector>

#include "absl/status/statusor.h"
#include "server/tensor/blas.h"

namespace bonsai::methods {

// sum over rows x_r of x of x_r H x_r^T, in double; `scratch` grows to the
// size of x.
absl::StatusOr<double> SumOfQuadraticForms(tensor::ConstMatrix x, tensor::ConstMatrix h,
                                           std::vector<float>& scratch);

// ||x op(u)||^2 in double for upper triangular u, overwriting x. With the
// Cholesky factor of h = R^T R this is SumOfQuadraticForms(x, h) in half the
// flops: x h x^T = ||x R^T||^2.
absl::StatusOr<double> SquaredNormTimesUpper(tensor::Matrix x, tensor::ConstMatrix u,
                                             tensor::Transpose trans_u);

// Sum of squares of a span, in double.
double SumOfSquares(absl::Span<const float> v);

// num / den, or 0 when the layer's output is zero on the calibration data.
inline double RelativeReconstructionError(double num, double den) {
  return den > 0.0 ? num / den : 0.0;
}

// Rows per chunk when a method walks a layer's rows with row buffers: enough
// for BLAS to be efficient (each chunk re-packs the d x d Gram matrix, so
// small chunks spent most of SparseGPT's time there), small next to the layer.
inline constexpr int64_t kRowChunk = 512;

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_RECONSTRUCTION_H_
