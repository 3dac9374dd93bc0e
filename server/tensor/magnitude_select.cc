#include "server/tensor/magnitude_select.h"

#include <bit>
#include <cmath>

namespace bonsai::tensor {
namespace {

inline uint32_t MagnitudeBits(float v) {
  return std::bit_cast<uint32_t>(v) & 0x7fffffffu;
}

}  // namespace

MagnitudeSelector::MagnitudeSelector(uint64_t k)
    : k_(k), coarse_(1u << 15, 0), fine_(1u << 16, 0) {}

void MagnitudeSelector::ObserveCoarse(absl::Span<const float> values) {
  uint64_t* hist = coarse_.data();
  for (float v : values) ++hist[MagnitudeBits(v) >> 16];
  observed_ += values.size();
}

void MagnitudeSelector::FinishCoarsePass() {
  if (k_ == 0 || k_ > observed_) return;
  uint64_t cumulative = 0;
  for (uint32_t b = 0; b < coarse_.size(); ++b) {
    if (cumulative + coarse_[b] >= k_) {
      bucket_ = b;
      below_bucket_ = cumulative;
      return;
    }
    cumulative += coarse_[b];
  }
}

void MagnitudeSelector::ObserveFine(absl::Span<const float> values) {
  if (k_ == 0) return;
  uint64_t* hist = fine_.data();
  const uint32_t bucket = bucket_;
  for (float v : values) {
    const uint32_t bits = MagnitudeBits(v);
    if ((bits >> 16) == bucket) ++hist[bits & 0xffffu];
  }
}

MagnitudeCut MagnitudeSelector::FinishFinePass() {
  MagnitudeCut cut;
  if (k_ == 0) return cut;
  if (k_ >= observed_) {  // everything goes
    cut.threshold_bits = 0xffffffffu;
    cut.prune_nothing = false;
    return cut;
  }
  uint64_t cumulative = below_bucket_;
  for (uint32_t low = 0; low < fine_.size(); ++low) {
    if (cumulative + fine_[low] >= k_) {
      cut.threshold_bits = (bucket_ << 16) | low;
      cut.ties_to_prune = k_ - cumulative;
      cut.prune_nothing = false;
      return cut;
    }
    cumulative += fine_[low];
  }
  return cut;  // unreachable when both passes saw the same data
}

uint64_t MagnitudeMasker::Apply(absl::Span<float> values) {
  if (cut_.prune_nothing) return 0;
  uint64_t selected = 0;
  const uint32_t threshold = cut_.threshold_bits;
  for (float& v : values) {
    const uint32_t bits = MagnitudeBits(v);
    if (bits < threshold) {
      v = 0.0f;
      ++selected;
    } else if (bits == threshold && ties_left_ > 0) {
      v = 0.0f;
      --ties_left_;
      ++selected;
    }
  }
  return selected;
}

void PruneSmallestMagnitudes(absl::Span<float> values, uint64_t k) {
  MagnitudeSelector selector(k);
  selector.ObserveCoarse(values);
  selector.FinishCoarsePass();
  selector.ObserveFine(values);
  MagnitudeMasker masker(selector.FinishFinePass());
  masker.Apply(values);
}

uint64_t PruneCount(double sparsity, uint64_t n) {
  const double k = std::nearbyint(sparsity * static_cast<double>(n));
  if (k <= 0) return 0;
  if (k >= static_cast<double>(n)) return n;
  return static_cast<uint64_t>(k);
}

}  // namespace bonsai::tensor
