// What SparseGPT and GPTQ share around their column sweeps, both being the
// optimal brain surgeon recipe of Frantar et al. (GPTQ 2022, SparseGPT
// 2023): the weight as a matrix in the order its columns are visited, the
// dampened Hessian H_d = H/n + lambda I of the calibration inputs turned
// into the upper factor U of its inverse (U^T U = H_d^-1), and the
// denominator of the reconstruction error.
//
// How: H_d is factored once as V V^T with V upper (a Cholesky factorization
// with rows and columns reversed) and V^-1 is U: one factorization and one
// triangular inverse, half the flops of factoring H_d, inverting it and
// factoring the inverse as the papers' code does. In between, V gives the
// denominator tr(W (H/n) W^T) = ||W V||^2 - lambda ||W||^2, a triangular
// product at half the flops of W times H. All of it in the calibration Gram
// matrix's own storage (the statistics are the Apply's to consume,
// method.h), unless the columns are permuted, which takes a permuted copy.
//
// Inputs that are always zero (H_jj = 0) cannot matter: their weights are
// zeroed and H_jj set to 1 so that H_d is invertible.
#ifndef BONSAI_SERVER_METHODS_OBS_LAYER_H_
#define BONSAI_SERVER_METHODS_OBS_LAYER_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "server/methods/method.h"
#include "server/methods/reconstruction.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {

// The weight as a strided matrix in processing order: (r, c) at
// data[r * row_stride + c * col_stride], one of the strides being 1.
struct ObsMatrix {
  absl::Span<float> data;
  int64_t rows = 0, cols = 0, row_stride = 0, col_stride = 0;
  float& at(int64_t r, int64_t c) const { return data[r * row_stride + c * col_stride]; }
};

// The natural column of processing column p; an empty order is the identity.
inline int64_t Natural(const std::vector<int64_t>& order, int64_t p) {
  return order.empty() ? p : order[p];
}

// w[0, n) -= a * u[0, n), eight lanes at a time: -O2 leaves this loop
// scalar (its trip count is unknown), and it is the sweeps' inner loop.
// Each lane does the scalar loop's multiply and subtract, so results match it.
void SubtractScaled(float a, const float* u, float* w, int64_t n);

// Sum of ||chunk op(t)||^2 over a weight's rows in chunks as large as
// `buffer` allows; fill_row(r, row) writes row r of the chunk first.
template <typename FillRow>
absl::StatusOr<double> SumOverRowChunks(int64_t rows, int64_t d, absl::Span<float> buffer,
                                        tensor::ConstMatrix t, tensor::Transpose trans_t,
                                        FillRow fill_row) {
  if (d == 0) return 0.0;
  const int64_t chunk_rows = static_cast<int64_t>(buffer.size()) / d;
  double sum = 0.0;
  for (int64_t first = 0; first < rows; first += chunk_rows) {
    const int64_t count = std::min(chunk_rows, rows - first);
    for (int64_t r = 0; r < count; ++r) fill_row(first + r, buffer.subspan(r * d, d));
    absl::StatusOr<double> part = SquaredNormTimesUpper(
        tensor::MatrixOf(buffer.subspan(0, count * d), count, d), t, trans_t);
    if (!part.ok()) return part.status();
    sum += *part;
  }
  return sum;
}

class ObsLayer {
 public:
  struct Options {
    std::vector<int64_t> order;  // natural column of each processing column; empty: natural
    // Work on a row-major copy even where the weight could be worked on in
    // place, leaving the tensor's values as they came until WriteBack.
    bool copy = false;
    double dampening = 0.01;  // lambda as a fraction of the mean of diag(H/n)
    int block_size = 128;     // sizes the work buffer
  };

  ObsLayer() = default;
  ObsLayer(const ObsLayer&) = delete;
  ObsLayer& operator=(const ObsLayer&) = delete;

  // The weight must have calibration statistics of its reduction length
  // (CheckCalibration). FailedPrecondition when H_d is not positive definite.
  absl::Status Prepare(const WeightTensor& weight, const MatrixGeometry& geometry,
                       Options options);

  const ObsMatrix& w() const { return w_; }
  absl::Span<const float> u() const { return u_; }  // d x d, upper
  float lambda() const { return lambda_; }
  double denominator() const { return denominator_; }  // tr(W (H/n) W^T)
  // max(512 rows, 2 blocks) of floats for the sweep to use as it likes.
  absl::Span<float> work() { return absl::MakeSpan(work_); }
  const std::vector<int64_t>& order() const { return order_; }

  // Leaves the result in the tensor (copying it back unless worked on in
  // place) and returns ||W_0 - W'||^2 over the inputs that are not always
  // zero, W_0 being the weight as it came (0 when worked on in place: the
  // original is gone by then).
  double WriteBack();

 private:
  const MatrixGeometry* g_ = nullptr;
  absl::Span<float> values_;
  bool in_place_ = true;
  ObsMatrix w_;
  std::vector<float> scratch_;        // the weight in processing order, when not in place
  std::vector<int64_t> order_;
  std::vector<int64_t> column_offset_;  // storage offset in row 0 of each processing column
  std::vector<uint8_t> dead_;         // inputs that are always zero, processing order
  std::vector<float> owned_hessian_;  // a permuted copy of H, when permuted
  absl::Span<const float> u_;
  float lambda_ = 0.0f;
  double denominator_ = 0.0;
  std::vector<float> work_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_OBS_LAYER_H_
