// The fast path of exact k-smallest selection by magnitude (Floyd and
// Rivest's idea): a small sample predicts a narrow bracket of magnitudes
// that holds the k-th smallest; one pass then counts the weights below the
// bracket and collects the few inside it, and selecting among those pins the
// k-th exactly. Both passes are plain compares the compiler vectorises,
// where a histogram pass costs a scattered increment per weight.
//
// The sample only guides; the answer never depends on it. When the sample
// misleads (the k-th lands outside the bracket) or the bracket holds more
// than a fixed budget, Settled() stays false and the caller falls back to
// the radix histograms, which are exact on any data.
//
// Everything is deterministic: sample positions come from a fixed-seed
// generator, so the same input gives the same passes.
#ifndef BONSAI_SERVER_TENSOR_MAGNITUDE_BRACKET_H_
#define BONSAI_SERVER_TENSOR_MAGNITUDE_BRACKET_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "server/tensor/magnitude_cut.h"

namespace bonsai::tensor {

// How much memory the bracket may use; tests shrink it to reach the
// fallback on small inputs.
struct BracketLimits {
  // 256K-512K sampled magnitudes (1-2 MiB): enough that the bracket holds
  // about 1% of the weights at 50% sparsity.
  size_t sample_target = size_t{1} << 18;
  // The bracket's collected magnitudes are capped at 32 MiB; past that (over
  // roughly 800M weights in one selection) the radix fallback is cheaper.
  uint64_t max_inside = uint64_t{1} << 23;
};

class MagnitudeBracket {
 public:
  explicit MagnitudeBracket(BracketLimits limits = {}) : limits_(limits) {}

  // Pass 1: every span in order; counts the weights and samples them.
  void Sample(absl::Span<const float> values);
  uint64_t observed() const { return observed_; }
  // Chooses the bracket for the `k` smallest. When the sample holds every
  // weight (small inputs), this already settles the cut.
  void FinishSample(uint64_t k);

  // Pass 2: the same spans in the same order.
  void Collect(absl::Span<const float> values);
  void FinishCollect();

  // The exact cut, once a pass settled it.
  const std::optional<MagnitudeCut>& cut() const { return cut_; }

 private:
  uint64_t NextRunStart(uint64_t run_start);
  void SettleFrom(std::vector<uint32_t>& values, uint64_t rank, uint64_t below);

  BracketLimits limits_;
  uint64_t k_ = 0;
  uint64_t observed_ = 0;
  // Sampling: runs of neighbours start at pseudo-random gaps of mean stride_
  // runs; when the sample doubles its target, every other run goes and the
  // stride doubles, so memory stays fixed whatever the number of weights.
  std::vector<uint32_t> sample_;
  uint64_t next_sample_ = 0, run_start_ = 0;
  uint64_t stride_ = 1;
  uint64_t rng_state_ = 0x9e3779b97f4a7c15ull;
  bool sample_is_everything_ = true;
  // Collecting: magnitude bits in [low_, high_] are kept (up to a budget).
  uint32_t low_ = 0, high_ = 0;
  uint64_t below_ = 0, inside_ = 0;
  std::vector<uint32_t> inside_bits_;
  std::optional<MagnitudeCut> cut_;
};

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_MAGNITUDE_BRACKET_H_
