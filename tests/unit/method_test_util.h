// A weight with its own storage for method tests: the TensorInfo, values and
// calibration that a WeightTensor only points to.
#ifndef BONSAI_TESTS_UNIT_METHOD_TEST_UTIL_H_
#define BONSAI_TESTS_UNIT_METHOD_TEST_UTIL_H_

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "server/methods/method.h"

namespace bonsai::methods::testing {

struct OwnedWeight {
  formats::TensorInfo info;
  tensor::FloatTensor values;
  std::optional<CalibrationStats> calibration;
  double sparsity = 0.0;

  OwnedWeight(std::string name, std::vector<int64_t> shape, std::vector<float> data,
              std::optional<formats::WeightLayout> layout = std::nullopt) {
    info.name = std::move(name);
    info.shape = shape;
    info.dtype = tensor::DType::kF32;
    info.params = data.size();
    info.layout = layout;
    values.shape = std::move(shape);
    values.values = std::move(data);
  }

  WeightTensor view() {
    return {&info, &values, sparsity, calibration ? &*calibration : nullptr};
  }
};

inline std::vector<float> RandomNormal(size_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

// Inputs with correlated features, as real activations have, so that
// updating the weights not yet visited has something to gain.
inline std::vector<float> CorrelatedInputs(int64_t n, int64_t d, uint32_t seed) {
  std::vector<float> z = RandomNormal(n * d, seed);
  std::vector<float> x(n * d);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t j = 0; j < d; ++j)
      x[s * d + j] = z[s * d + j] + 0.8f * z[s * d + (j + 1) % d] + 0.5f * z[s * d];
  return x;
}

// X^T X of x (n x d, row-major), in double then rounded once.
inline CalibrationStats GramOf(const std::vector<float>& x, int64_t n, int64_t d) {
  CalibrationStats stats;
  stats.dim = d;
  stats.samples = static_cast<uint64_t>(n);
  stats.gram.assign(d * d, 0.0f);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) {
      double s = 0.0;
      for (int64_t r = 0; r < n; ++r) s += static_cast<double>(x[r * d + i]) * x[r * d + j];
      stats.gram[i * d + j] = static_cast<float>(s);
    }
  return stats;
}

// ||W X^T - W' X^T||^2 / ||W X^T||^2 from the inputs themselves, for w of
// [out, d] row-major.
inline double OutputError(const std::vector<float>& before, const std::vector<float>& after,
                          const std::vector<float>& x, int64_t out, int64_t n, int64_t d) {
  double num = 0.0, den = 0.0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t s = 0; s < n; ++s) {
      double y = 0.0, y2 = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        y += static_cast<double>(before[o * d + j]) * x[s * d + j];
        y2 += static_cast<double>(after[o * d + j]) * x[s * d + j];
      }
      num += (y - y2) * (y - y2);
      den += y * y;
    }
  return num / den;
}

inline int64_t CountZeros(const std::vector<float>& v) {
  int64_t zeros = 0;
  for (float x : v) zeros += x == 0.0f;
  return zeros;
}

// One layer stored twice, [out, d] as a Linear weight and [d, out] as an
// ONNX MatMul B, with the same calibration: methods must treat both alike.
struct TransposedPair {
  OwnedWeight rows, cols;
  // Element (o, j) of each storage.
  float Row(int64_t o, int64_t j) const { return rows.values.values[o * d + j]; }
  float Col(int64_t o, int64_t j) const { return cols.values.values[j * out + o]; }
  int64_t out, d;
};

inline TransposedPair MakeTransposedPair(int64_t out, int64_t d, int64_t n, uint32_t seed) {
  const std::vector<float> x = CorrelatedInputs(n, d, seed);
  const std::vector<float> rows = RandomNormal(out * d, seed + 1);
  std::vector<float> cols(out * d);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < d; ++j) cols[j * out + o] = rows[o * d + j];
  TransposedPair pair{OwnedWeight("fc.weight", {out, d}, rows),
                      OwnedWeight("matmul.B", {d, out}, cols, formats::WeightLayout{1, 0}), out, d};
  pair.rows.calibration = pair.cols.calibration = GramOf(x, n, d);
  return pair;
}

// A method configured in steps and applied to a test weight, e.g.
// `SparseGpt(0.5).NM(2, 4).On(w)`; a test's own builder derives from it and
// sets the method and its main parameters in its constructor.
template <typename Self>
struct ConfiguredMethod {
  MethodConfig config;
  Self& NM(int n, int m) {
    config.n = n;
    config.m = m;
    return static_cast<Self&>(*this);
  }
  Self& Block(int block) {
    config.block_size = block;
    return static_cast<Self&>(*this);
  }
  absl::StatusOr<MethodOutcome> On(OwnedWeight& w, const ProgressTick& tick = nullptr) {
    w.sparsity = config.sparsity;
    auto method = CreateMethod(config);
    if (!method.ok()) return method.status();
    return (*method)->Apply(w.view(), tick);
  }
};

}  // namespace bonsai::methods::testing

#endif  // BONSAI_TESTS_UNIT_METHOD_TEST_UTIL_H_
