#include "server/tensor/magnitude_select.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace bonsai::tensor {
namespace {

inline uint32_t MagnitudeBits(float v) {
  return std::bit_cast<uint32_t>(v) & 0x7fffffffu;
}

// The loops below come in a fixed-length form for whole blocks: with the
// trip count known, the compiler vectorises them at -O2.
constexpr size_t kFineBlock = 64;
constexpr size_t kApplyChunk = 4096;

template <size_t kLength>
uint32_t CountInBucket(const float* values, uint32_t bucket) {
  uint32_t count = 0;
  for (size_t i = 0; i < kLength; ++i) count += (MagnitudeBits(values[i]) >> 16) == bucket;
  return count;
}

void AddToFineHistogram(const float* values, size_t length, uint32_t bucket, uint64_t* hist) {
  for (size_t i = 0; i < length; ++i) {
    const uint32_t bits = MagnitudeBits(values[i]);
    if ((bits >> 16) == bucket) ++hist[bits & 0xffffu];
  }
}

// Zeroes the elements below `threshold`, branch-free (at 50% sparsity a
// branch on it is a coin flip); counts them and the elements equal to it.
template <size_t kLength>
void ZeroBelow(float* values, size_t length, uint32_t threshold, uint32_t* below,
               uint32_t* equal) {
  const size_t n = kLength ? kLength : length;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t bits = MagnitudeBits(values[i]);
    *below += bits < threshold;
    *equal += bits == threshold;
    values[i] = bits < threshold ? 0.0f : values[i];
  }
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

// The bucket holds a small share of the weights (about 0.2% of normal
// weights at 50% sparsity), so most blocks have none of them and are passed
// over after a vectorised count.
void MagnitudeSelector::ObserveFine(absl::Span<const float> values) {
  if (k_ == 0) return;
  const float* data = values.data();
  size_t i = 0;
  for (; i + kFineBlock <= values.size(); i += kFineBlock) {
    if (CountInBucket<kFineBlock>(data + i, bucket_) > 0) {
      AddToFineHistogram(data + i, kFineBlock, bucket_, fine_.data());
    }
  }
  AddToFineHistogram(data + i, values.size() - i, bucket_, fine_.data());
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

// Ties (rare) are pruned in a second look at the same chunk, in index
// order: ZeroBelow leaves elements equal to the threshold as they were and
// turns the others it prunes into zeros, which equal the threshold only when
// it is 0, and then nothing was below it.
uint64_t MagnitudeMasker::Apply(absl::Span<float> values) {
  if (cut_.prune_nothing) return 0;
  uint64_t selected = 0;
  const uint32_t threshold = cut_.threshold_bits;
  for (size_t first = 0; first < values.size(); first += kApplyChunk) {
    float* chunk = values.data() + first;
    const size_t length = std::min(kApplyChunk, values.size() - first);
    uint32_t below = 0, equal = 0;
    if (length == kApplyChunk) {
      ZeroBelow<kApplyChunk>(chunk, length, threshold, &below, &equal);
    } else {
      ZeroBelow<0>(chunk, length, threshold, &below, &equal);
    }
    selected += below;
    for (size_t i = 0; equal > 0 && ties_left_ > 0 && i < length; ++i) {
      if (MagnitudeBits(chunk[i]) != threshold) continue;
      chunk[i] = 0.0f;
      --ties_left_;
      --equal;
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
