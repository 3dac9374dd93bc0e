// The only door to BLAS and LAPACK. Everything above works with spans and
// absl::Status; this file owns the row/column-major conventions and turns
// LAPACK's info codes into errors a user can act on.
//
// Matrices are row-major views into spans: element (r, c) of a Matrix is
// data[r * ld + c]. A view may be a block of a larger matrix (ld > cols).
#ifndef BONSAI_SERVER_TENSOR_BLAS_H_
#define BONSAI_SERVER_TENSOR_BLAS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace bonsai::tensor {

struct ConstMatrix {
  absl::Span<const float> data;
  int64_t rows = 0, cols = 0, ld = 0;
};

struct Matrix {
  absl::Span<float> data;
  int64_t rows = 0, cols = 0, ld = 0;
  operator ConstMatrix() const { return {data, rows, cols, ld}; }
};

// A whole row-major matrix over a span of rows * cols elements.
inline Matrix MatrixOf(absl::Span<float> data, int64_t rows, int64_t cols) {
  return {data, rows, cols, cols};
}
inline ConstMatrix MatrixOf(absl::Span<const float> data, int64_t rows, int64_t cols) {
  return {data, rows, cols, cols};
}

enum class Transpose { kNo, kYes };

// c = alpha * op(a) * op(b) + beta * c.
absl::Status Gemm(float alpha, ConstMatrix a, Transpose trans_a, ConstMatrix b,
                  Transpose trans_b, float beta, Matrix c);

// c = alpha * a^T a + beta * c for a of n x d and c of d x d, with both
// triangles of c filled (BLAS writes only one).
absl::Status GramUpdate(float alpha, ConstMatrix a, float beta, Matrix c);

// b = b * op(u) in place, u upper triangular (the strict lower part is
// ignored). Half the flops of a Gemm with u.
absl::Status MultiplyByUpperRight(ConstMatrix u, Transpose trans_u, Matrix b);

// For a symmetric positive definite h (only its upper triangle is read),
// replaces h by the upper Cholesky factor U of h^-1 (h^-1 = U^T U), with the
// strict lower triangle zeroed. This is the form SparseGPT's OBS updates
// read their rows from. FailedPrecondition when h is not positive definite.
absl::Status InverseUpperCholesky(Matrix h);

// InverseUpperCholesky in its two halves, for a caller that needs a
// factor of h itself in between:
//   ReversedCholeskyUpper writes over h the upper V with h = V V^T (so for
//   any x, x h x^T = ||x V||^2), strict lower triangle zeroed;
//   InvertUpper replaces V by V^-1, which is U: U^T U = V^-T V^-1 = h^-1.
// One factorization and one triangular inverse, where factoring h,
// inverting it and factoring the inverse takes twice the flops.
absl::Status ReversedCholeskyUpper(Matrix h);
absl::Status InvertUpper(Matrix v);

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_BLAS_H_
