#include "server/tensor/blas.h"

#include <cblas.h>
#include <lapacke.h>

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace bonsai::tensor {
namespace {

// BLAS and LAPACK take 32-bit dimensions in Debian's OpenBLAS.
bool FitsBlasInt(int64_t v) {
  return v >= 0 && v <= std::numeric_limits<int>::max();
}

absl::Status CheckView(const ConstMatrix& m, const char* what) {
  if (!FitsBlasInt(m.rows) || !FitsBlasInt(m.cols) || !FitsBlasInt(m.ld) ||
      m.ld < m.cols || m.ld < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "matrix ", what, " has bad dimensions ", m.rows, "x", m.cols, " ld ", m.ld));
  }
  const uint64_t needed =
      m.rows == 0 || m.cols == 0 ? 0 : static_cast<uint64_t>(m.rows - 1) * m.ld + m.cols;
  if (m.data.size() < needed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "matrix ", what, " (", m.rows, "x", m.cols, " ld ", m.ld, ") needs ", needed,
        " elements; its span has ", m.data.size()));
  }
  return absl::OkStatus();
}

CBLAS_TRANSPOSE ToCblas(Transpose t) { return t == Transpose::kYes ? CblasTrans : CblasNoTrans; }

absl::Status CheckSquare(const Matrix& h) {
  if (auto s = CheckView(h, "h"); !s.ok()) return s;
  if (h.rows != h.cols) {
    return absl::InvalidArgumentError(
        absl::StrCat("Hessian must be square; got ", h.rows, "x", h.cols));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Gemm(float alpha, ConstMatrix a, Transpose trans_a, ConstMatrix b,
                  Transpose trans_b, float beta, Matrix c) {
  for (auto [m, name] : {std::pair{a, "a"}, std::pair{b, "b"}, std::pair{ConstMatrix(c), "c"}}) {
    if (auto s = CheckView(m, name); !s.ok()) return s;
  }
  const int64_t m = trans_a == Transpose::kNo ? a.rows : a.cols;
  const int64_t k = trans_a == Transpose::kNo ? a.cols : a.rows;
  const int64_t kb = trans_b == Transpose::kNo ? b.rows : b.cols;
  const int64_t n = trans_b == Transpose::kNo ? b.cols : b.rows;
  if (k != kb || m != c.rows || n != c.cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gemm shapes do not agree: ", m, "x", k, " times ", kb, "x", n, " into ", c.rows,
        "x", c.cols));
  }
  if (m == 0 || n == 0) return absl::OkStatus();
  if (k == 0) {  // BLAS would still scale c by beta, but leave this explicit
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) c.data[r * c.ld + j] *= beta;
    return absl::OkStatus();
  }
  cblas_sgemm(CblasRowMajor, ToCblas(trans_a), ToCblas(trans_b), static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a.data.data(),
              static_cast<int>(a.ld), b.data.data(), static_cast<int>(b.ld), beta,
              c.data.data(), static_cast<int>(c.ld));
  return absl::OkStatus();
}

absl::Status GramUpdate(float alpha, ConstMatrix a, float beta, Matrix c) {
  if (auto s = CheckView(a, "a"); !s.ok()) return s;
  if (auto s = CheckView(c, "c"); !s.ok()) return s;
  if (c.rows != a.cols || c.cols != a.cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Gram of a ", a.rows, "x", a.cols, " matrix is ", a.cols, "x", a.cols, ", not ",
        c.rows, "x", c.cols));
  }
  const int64_t d = a.cols;
  if (d == 0) return absl::OkStatus();
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(d),
              static_cast<int>(a.rows), alpha, a.data.data(), static_cast<int>(a.ld), beta,
              c.data.data(), static_cast<int>(c.ld));
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < i; ++j) c.data[i * c.ld + j] = c.data[j * c.ld + i];
  return absl::OkStatus();
}

absl::Status MultiplyByUpperRight(ConstMatrix u, Transpose trans_u, Matrix b) {
  if (auto s = CheckView(u, "u"); !s.ok()) return s;
  if (auto s = CheckView(b, "b"); !s.ok()) return s;
  if (u.rows != u.cols || u.rows != b.cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "triangular product shapes do not agree: ", b.rows, "x", b.cols, " times ", u.rows,
        "x", u.cols));
  }
  if (b.rows == 0 || b.cols == 0) return absl::OkStatus();
  cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, ToCblas(trans_u), CblasNonUnit,
              static_cast<int>(b.rows), static_cast<int>(b.cols), 1.0f, u.data.data(),
              static_cast<int>(u.ld), b.data.data(), static_cast<int>(b.ld));
  return absl::OkStatus();
}

// Replaces the square matrix by J a J (J the reversal): element (i, j) goes
// to (n-1-i, n-1-j).
void Reverse(Matrix a) {
  const int64_t n = a.rows;
  for (int64_t i = 0; i < (n + 1) / 2; ++i) {
    float* top = a.data.data() + i * a.ld;
    float* bottom = a.data.data() + (n - 1 - i) * a.ld;
    const int64_t count = top == bottom ? n / 2 : n;
    for (int64_t j = 0; j < count; ++j) std::swap(top[j], bottom[n - 1 - j]);
  }
}

absl::Status ReversedCholeskyUpper(Matrix h) {
  if (auto s = CheckSquare(h); !s.ok()) return s;
  const int n = static_cast<int>(h.rows);
  if (n == 0) return absl::OkStatus();
  // J h J's lower triangle (row-major) is h's upper triangle; read column-
  // major it is the upper triangle, so LAPACK's 'U' factor J h J = M M^T
  // with M lower in our row-major terms, and h = (J M J)(J M J)^T.
  Reverse(h);
  const lapack_int info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', n, h.data.data(),
                                         static_cast<int>(h.ld));
  Reverse(h);
  if (info > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Hessian not positive definite (trailing minor ", info,
        " of ", n, "); raise dampening or send more calibration samples"));
  }
  if (info < 0) return absl::InternalError(absl::StrCat("spotrf argument ", -info, " invalid"));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) h.data[i * h.ld + j] = 0.0f;
  return absl::OkStatus();
}

absl::Status InvertUpper(Matrix v) {
  if (auto s = CheckSquare(v); !s.ok()) return s;
  const int n = static_cast<int>(v.rows);
  if (n == 0) return absl::OkStatus();
  // Row-major upper is column-major lower.
  const lapack_int info = LAPACKE_strtri(LAPACK_COL_MAJOR, 'L', 'N', n, v.data.data(),
                                         static_cast<int>(v.ld));
  if (info > 0) {
    return absl::FailedPreconditionError(
        "Hessian factor is singular; raise dampening or send more calibration samples");
  }
  if (info < 0) return absl::InternalError(absl::StrCat("strtri argument ", -info, " invalid"));
  return absl::OkStatus();
}

absl::Status InverseUpperCholesky(Matrix h) {
  if (auto s = ReversedCholeskyUpper(h); !s.ok()) return s;
  return InvertUpper(h);
}

}  // namespace bonsai::tensor
