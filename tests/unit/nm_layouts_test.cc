// N:M's fast paths (four groups per SIMD register, read end to end, side by
// side or gathered) against the rule applied one group at a time.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "server/methods/nm.h"
#include "server/methods/weight_matrix.h"
#include "tests/unit/method_test_util.h"
#include "tests/unit/weight_cases.h"

namespace bonsai::methods {
namespace {

using testing::EveryFill;
using testing::EveryLayout;
using testing::OwnedWeight;

// The rule as specified, group by group through the geometry: keep element
// t when fewer than n others beat it (earlier ones by >=, later ones by >).
std::vector<float> ReferenceNM(OwnedWeight& w, int n, int m) {
  const MatrixGeometry g = *GeometryOf(w.view());
  std::vector<float> v = w.values.values;
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t k = 0; k < g.kernel; ++k)
      for (int64_t first = 0; first + m <= g.channels; first += m) {
        std::vector<int64_t> at(m);
        std::vector<float> score(m);
        for (int t = 0; t < m; ++t) {
          at[t] = g.Offset(r, first + t, k);
          score[t] = std::fabs(v[at[t]]);
        }
        std::vector<bool> keep(m);
        for (int t = 0; t < m; ++t) {
          int beaten = 0;
          for (int j = 0; j < m; ++j)
            beaten += j < t ? score[j] >= score[t] : j > t && score[j] > score[t];
          keep[t] = beaten < n;
        }
        for (int t = 0; t < m; ++t)
          if (!keep[t]) v[at[t]] = 0.0f;
      }
  return v;
}

TEST(NMLayoutsTest, FastPathsKeepExactlyWhatTheRuleKeepsOnEveryLayout) {
  const std::vector<std::pair<int, int>> patterns = {{1, 4}, {2, 4}, {3, 4}, {1, 8},
                                                     {4, 8}, {7, 8}, {2, 16}, {1, 2}};
  uint32_t seed = 1;
  for (const testing::LayoutCase& layout : EveryLayout()) {
    for (testing::Fill fill : EveryFill()) {
      for (auto [n, m] : patterns) {
        int64_t count = 1;
        for (int64_t d : layout.shape) count *= d;
        OwnedWeight w("w", layout.shape, testing::Weights(fill, count, ++seed), layout.layout);
        const std::vector<float> expected = ReferenceNM(w, n, m);
        MethodConfig config;
        config.method = "nm";
        config.n = n;
        config.m = m;
        auto method = CreateMethod(config);
        ASSERT_TRUE(method.ok()) << method.status();
        ASSERT_TRUE((*method)->Apply(w.view(), nullptr).ok());
        EXPECT_TRUE(testing::SameBits(w.values.values, expected))
            << layout.name << ", " << NameOf(fill) << ", " << n << ":" << m;
      }
    }
  }
}

}  // namespace
}  // namespace bonsai::methods
