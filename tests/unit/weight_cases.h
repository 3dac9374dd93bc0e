// Weights of every layout the geometry knows, filled with data that finds
// the corners of a fast path: ties, zeros of both signs, NaN and infinity.
// The one-pass methods are checked bit for bit against their plain rules on
// these.
#ifndef BONSAI_TESTS_UNIT_WEIGHT_CASES_H_
#define BONSAI_TESTS_UNIT_WEIGHT_CASES_H_

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/formats/model.h"

namespace bonsai::methods::testing {

struct LayoutCase {
  std::string name;
  std::vector<int64_t> shape;
  formats::WeightLayout layout;
};

// Sizes are chosen so rows, groups and kernel positions do not all come in
// fours, and one row is long enough to be summed in blocks.
inline std::vector<LayoutCase> EveryLayout() {
  return {
      {"linear [out, in]", {6, 64}, {0, 1}},
      {"linear with a tail", {5, 70}, {0, 1}},
      {"long rows", {3, 20000}, {0, 1}},
      {"matmul [in, out]", {72, 7}, {1, 0}},
      {"matmul [in, out] in fours", {64, 8}, {1, 0}},
      {"conv [out, in, 3, 3]", {6, 8, 3, 3}, {0, 1}},
      {"conv [out, in, 1, 1]", {5, 16, 1, 1}, {0, 1}},
      {"conv transpose [in, out, 3, 3]", {8, 5, 3, 3}, {1, 0}},
      {"conv transpose [in, out, 1, 1]", {16, 6, 1, 1}, {1, 0}},
      {"channels last [out, kh, kw, in]", {4, 2, 3, 16}, {0, 3}},
      {"reduction first [in, k, out]", {16, 3, 5}, {2, 0}},
  };
}

enum class Fill { kNormal, kFewLevels, kNonFinite };

inline std::vector<Fill> EveryFill() { return {Fill::kNormal, Fill::kFewLevels, Fill::kNonFinite}; }

inline const char* NameOf(Fill fill) {
  switch (fill) {
    case Fill::kNormal: return "normal";
    case Fill::kFewLevels: return "few levels";
    case Fill::kNonFinite: return "non-finite";
  }
  return "";
}

// kFewLevels: multiples of 0.25 in [-1, 1], so groups tie and zeros of
// both signs are common. kNonFinite: normal values with a NaN, an infinity
// and a subnormal here and there.
inline std::vector<float> Weights(Fill fill, size_t count, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::uniform_int_distribution<int> level(-4, 4), pick(0, 40);
  std::vector<float> v(count);
  for (float& x : v) {
    if (fill == Fill::kFewLevels) {
      x = level(gen) * 0.25f;
      if (x == 0.0f && pick(gen) % 2) x = -0.0f;
      continue;
    }
    x = normal(gen);
    if (fill == Fill::kNonFinite) {
      const int p = pick(gen);
      if (p == 0) x = std::nanf("");
      if (p == 1) x = -INFINITY;
      if (p == 2) x = 1e-40f;
      if (p == 3) x = -0.0f;
    }
  }
  return v;
}

inline ::testing::AssertionResult SameBits(const std::vector<float>& actual,
                                           const std::vector<float>& expected) {
  if (actual.size() != expected.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::bit_cast<uint32_t>(actual[i]) != std::bit_cast<uint32_t>(expected[i])) {
      return ::testing::AssertionFailure() << "element " << i << ": " << actual[i] << " vs "
                                           << expected[i];
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace bonsai::methods::testing

#endif  // BONSAI_TESTS_UNIT_WEIGHT_CASES_H_
