#include "server/methods/reconstruction.h"

#include "gtest/gtest.h"
#include "tests/unit/method_test_util.h"

namespace bonsai::methods {
namespace {

using testing::GramOf;
using testing::RandomNormal;

TEST(ReconstructionTest, NormTimesHessianFactorEqualsSumOfQuadraticForms) {
  const int64_t rows = 6, d = 20, n = 50;
  const std::vector<float> x = RandomNormal(rows * d, 1);
  std::vector<float> h = GramOf(RandomNormal(n * d, 2), n, d).gram;
  std::vector<float> scratch;
  absl::StatusOr<double> forms =
      SumOfQuadraticForms(tensor::MatrixOf(absl::MakeConstSpan(x), rows, d),
                          tensor::MatrixOf(absl::MakeConstSpan(h), d, d), scratch);
  ASSERT_TRUE(forms.ok());
  ASSERT_TRUE(tensor::ReversedCholeskyUpper(tensor::MatrixOf(absl::MakeSpan(h), d, d)).ok());
  std::vector<float> product = x;
  absl::StatusOr<double> norm = SquaredNormTimesUpper(
      tensor::MatrixOf(absl::MakeSpan(product), rows, d),
      tensor::MatrixOf(absl::MakeConstSpan(h), d, d), tensor::Transpose::kNo);
  ASSERT_TRUE(norm.ok());
  EXPECT_NEAR(*norm, *forms, 1e-5 * *forms);
}

TEST(ReconstructionTest, SumOfSquaresAddsInDouble) {
  const std::vector<float> v = {3.0f, 4.0f, 1e-4f};
  EXPECT_DOUBLE_EQ(SumOfSquares(v), 25.0 + double(1e-4f) * double(1e-4f));
}

}  // namespace
}  // namespace bonsai::methods
