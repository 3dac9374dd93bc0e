#include "server/tensor/blas.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace bonsai::tensor {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// X^T X (n x n) of `samples` random rows: a positive definite Hessian.
std::vector<float> RandomGram(int samples, int n, uint32_t seed) {
  const std::vector<float> x = Random(static_cast<size_t>(samples) * n, seed);
  std::vector<float> h(static_cast<size_t>(n) * n, 0.0f);
  EXPECT_TRUE(GramUpdate(1.0f, MatrixOf(absl::MakeConstSpan(x), samples, n), 0.0f,
                         MatrixOf(absl::MakeSpan(h), n, n))
                  .ok());
  return h;
}

TEST(BlasTest, GemmWithTransposesMatchesTheDefinition) {
  const std::vector<float> a = Random(3 * 4, 1), b = Random(5 * 4, 2);  // a 3x4, b 5x4
  std::vector<float> c(3 * 5, 1.0f);  // c (3x5) = 2 a (3x4) b^T (4x5) + 0.5 c
  ASSERT_TRUE(Gemm(2.0f, MatrixOf(absl::MakeConstSpan(a), 3, 4), Transpose::kNo,
                   MatrixOf(absl::MakeConstSpan(b), 5, 4), Transpose::kYes, 0.5f,
                   MatrixOf(absl::MakeSpan(c), 3, 5))
                  .ok());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) {
      double s = 0;
      for (int k = 0; k < 4; ++k) s += a[i * 4 + k] * b[j * 4 + k];
      EXPECT_NEAR(c[i * 5 + j], 2 * s + 0.5, 1e-5);
    }
}

TEST(BlasTest, GemmRefusesShapesThatDoNotAgree) {
  std::vector<float> a(6), b(6), c(4);
  const absl::Status s = Gemm(1, MatrixOf(absl::MakeConstSpan(a), 2, 3), Transpose::kNo,
                              MatrixOf(absl::MakeConstSpan(b), 2, 3), Transpose::kNo, 0,
                              MatrixOf(absl::MakeSpan(c), 2, 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST(BlasTest, GramUpdateFillsBothTriangles) {
  const std::vector<float> x = Random(7 * 3, 3);
  std::vector<float> g(9, 0.0f);
  ASSERT_TRUE(GramUpdate(1.0f, MatrixOf(absl::MakeConstSpan(x), 7, 3), 0.0f,
                         MatrixOf(absl::MakeSpan(g), 3, 3))
                  .ok());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      double s = 0;
      for (int r = 0; r < 7; ++r) s += x[r * 3 + i] * x[r * 3 + j];
      EXPECT_NEAR(g[i * 3 + j], s, 1e-4);
    }
}

TEST(BlasTest, InverseUpperCholeskyGivesUpperUWithUTransposeUTheInverse) {
  const int n = 6;
  const std::vector<float> h = RandomGram(20, n, 4);
  std::vector<float> u = h;
  ASSERT_TRUE(InverseUpperCholesky(MatrixOf(absl::MakeSpan(u), n, n)).ok());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) EXPECT_EQ(u[i * n + j], 0.0f);
  // H * (U^T U) = I
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) {
        double inv_kj = 0;
        for (int l = 0; l < n; ++l) inv_kj += u[l * n + k] * u[l * n + j];
        s += h[i * n + k] * inv_kj;
      }
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-3);
    }
}

TEST(BlasTest, ReversedCholeskyTurnsQuadraticFormsIntoNormsOfATriangularProduct) {
  const int n = 5, rows = 3;
  const std::vector<float> h = RandomGram(20, n, 5), w = Random(rows * n, 6);
  std::vector<float> v = h, wv = w;
  ASSERT_TRUE(ReversedCholeskyUpper(MatrixOf(absl::MakeSpan(v), n, n)).ok());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) EXPECT_EQ(v[i * n + j], 0.0f);  // upper triangular
  ASSERT_TRUE(MultiplyByUpperRight(MatrixOf(absl::MakeConstSpan(v), n, n), Transpose::kNo,
                                   MatrixOf(absl::MakeSpan(wv), rows, n))
                  .ok());
  for (int i = 0; i < rows; ++i) {
    double form = 0, norm = 0;  // w_i h w_i^T and ||w_i V||^2
    for (int a = 0; a < n; ++a) {
      norm += double(wv[i * n + a]) * wv[i * n + a];
      for (int b = 0; b < n; ++b) form += double(w[i * n + a]) * h[a * n + b] * w[i * n + b];
    }
    EXPECT_NEAR(norm, form, 1e-4 * form);
  }
}

TEST(BlasTest, InverseUpperCholeskyIsTheReversedFactorThenItsInverse) {
  const int n = 7;
  const std::vector<float> h = RandomGram(30, n, 7);
  std::vector<float> whole = h, halves = h;
  ASSERT_TRUE(InverseUpperCholesky(MatrixOf(absl::MakeSpan(whole), n, n)).ok());
  ASSERT_TRUE(ReversedCholeskyUpper(MatrixOf(absl::MakeSpan(halves), n, n)).ok());
  ASSERT_TRUE(InvertUpper(MatrixOf(absl::MakeSpan(halves), n, n)).ok());
  EXPECT_EQ(whole, halves);
}

TEST(BlasTest, NotPositiveDefiniteIsFailedPreconditionSuggestingDampening) {
  std::vector<float> h = {1, 2, 2, 1};
  const absl::Status s = InverseUpperCholesky(MatrixOf(absl::MakeSpan(h), 2, 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("raise dampening"), absl::string_view::npos);
}

TEST(BlasTest, MultiplyByUpperRightIgnoresTheLowerTriangle) {
  const std::vector<float> u = {1, 2, 99, 3};  // 99 is below the diagonal
  std::vector<float> b = {1, 1, 2, 0};
  ASSERT_TRUE(MultiplyByUpperRight(MatrixOf(absl::MakeConstSpan(u), 2, 2), Transpose::kNo,
                                   MatrixOf(absl::MakeSpan(b), 2, 2))
                  .ok());
  EXPECT_EQ(b, (std::vector<float>{1, 5, 2, 4}));
  std::vector<float> c = {1, 1, 2, 0};  // times u^T = {1, 0; 2, 3}
  ASSERT_TRUE(MultiplyByUpperRight(MatrixOf(absl::MakeConstSpan(u), 2, 2), Transpose::kYes,
                                   MatrixOf(absl::MakeSpan(c), 2, 2))
                  .ok());
  EXPECT_EQ(c, (std::vector<float>{3, 3, 2, 0}));
}

}  // namespace
}  // namespace bonsai::tensor
