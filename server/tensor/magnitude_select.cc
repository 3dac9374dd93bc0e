#include "server/tensor/magnitude_select.h"

#include <algorithm>
#include <cmath>

#include "server/tensor/run_in_parallel.h"

namespace bonsai::tensor {
namespace {

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

// The radix fallback: two fixed histograms (256 KiB + 512 KiB).
class MagnitudeSelector::Radix {
 public:
  explicit Radix(uint64_t k) : k_(k), coarse_(1u << 15, 0), fine_(1u << 16, 0) {}

  void ObserveCoarse(absl::Span<const float> values) {
    uint64_t* hist = coarse_.data();
    for (float v : values) ++hist[MagnitudeBits(v) >> 16];
  }

  void FinishCoarsePass() {
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
  // weights at 50% sparsity), so most blocks have none of them and are
  // passed over after a vectorised count.
  void ObserveFine(absl::Span<const float> values) {
    const float* data = values.data();
    size_t i = 0;
    for (; i + kFineBlock <= values.size(); i += kFineBlock) {
      if (CountInBucket<kFineBlock>(data + i, bucket_) > 0) {
        AddToFineHistogram(data + i, kFineBlock, bucket_, fine_.data());
      }
    }
    AddToFineHistogram(data + i, values.size() - i, bucket_, fine_.data());
  }

  // 0 < k < the number of weights observed (the bracket settles the rest).
  MagnitudeCut FinishFinePass() const {
    uint64_t cumulative = below_bucket_;
    for (uint32_t low = 0; low < fine_.size(); ++low) {
      if (cumulative + fine_[low] >= k_) {
        return MagnitudeCut{(bucket_ << 16) | low, k_ - cumulative, false};
      }
      cumulative += fine_[low];
    }
    return MagnitudeCut::Everything();  // unreachable when both passes saw the same data
  }

 private:
  uint64_t k_;
  std::vector<uint64_t> coarse_;  // 1 << 15 buckets: the sign bit is cleared
  std::vector<uint64_t> fine_;    // 1 << 16 buckets
  uint32_t bucket_ = 0;           // high 16 bits of the k-th magnitude
  uint64_t below_bucket_ = 0;     // elements in lower buckets
};

MagnitudeSelector::MagnitudeSelector(uint64_t k, BracketLimits limits)
    : k_(k), bracket_(limits) {}
MagnitudeSelector::~MagnitudeSelector() = default;

void MagnitudeSelector::Observe(int pass, absl::Span<const float> values) {
  switch (pass) {
    case 0: bracket_.Sample(values); break;
    case 1: bracket_.Collect(values); break;
    case 2: radix_->ObserveCoarse(values); break;
    case 3: radix_->ObserveFine(values); break;
  }
}

void MagnitudeSelector::FinishPass(int pass) {
  switch (pass) {
    case 0:
      bracket_.FinishSample(k_);
      cut_ = bracket_.cut();
      break;
    case 1:
      bracket_.FinishCollect();
      cut_ = bracket_.cut();
      if (!cut_) radix_ = std::make_unique<Radix>(k_);
      break;
    case 2: radix_->FinishCoarsePass(); break;
    case 3:
      cut_ = radix_->FinishFinePass();
      radix_.reset();
      break;
  }
}

// Zeroing below the threshold splits across two cores (run_in_parallel.h);
// ties (rare) are then pruned in index order on this thread, in a second
// look at the chunks that hold any: ZeroBelow leaves elements equal to the
// threshold as they were and turns the others it prunes into zeros, which
// equal the threshold only when it is 0, and then nothing was below it.
uint64_t MagnitudeMasker::Apply(absl::Span<float> values) {
  if (cut_.prune_nothing) return 0;
  const uint32_t threshold = cut_.threshold_bits;
  const size_t chunks = (values.size() + kApplyChunk - 1) / kApplyChunk;
  std::vector<uint32_t> equal(chunks, 0);
  uint64_t below[2] = {0, 0};
  const auto zero_below = [&](size_t first_chunk, size_t end_chunk, uint64_t* selected) {
    for (size_t c = first_chunk; c < end_chunk; ++c) {
      float* chunk = values.data() + c * kApplyChunk;
      const size_t length = std::min(kApplyChunk, values.size() - c * kApplyChunk);
      uint32_t chunk_below = 0;
      if (length == kApplyChunk) {
        ZeroBelow<kApplyChunk>(chunk, length, threshold, &chunk_below, &equal[c]);
      } else {
        ZeroBelow<0>(chunk, length, threshold, &chunk_below, &equal[c]);
      }
      *selected += chunk_below;
    }
  };
  const size_t middle = chunks / 2;
  RunInParallel(
      values.size() >= kWorthASecondCore, [&] { zero_below(0, middle, &below[0]); },
      [&] { zero_below(middle, chunks, &below[1]); });

  uint64_t selected = below[0] + below[1];
  for (size_t c = 0; c < chunks && ties_left_ > 0; ++c) {
    float* chunk = values.data() + c * kApplyChunk;
    const size_t length = std::min(kApplyChunk, values.size() - c * kApplyChunk);
    for (size_t i = 0; equal[c] > 0 && ties_left_ > 0 && i < length; ++i) {
      if (MagnitudeBits(chunk[i]) != threshold) continue;
      chunk[i] = 0.0f;
      --ties_left_;
      --equal[c];
      ++selected;
    }
  }
  return selected;
}

void PruneSmallestMagnitudes(absl::Span<float> values, uint64_t k) {
  MagnitudeSelector selector(k);
  for (int pass = 0; selector.NeedsPass(pass); ++pass) {
    selector.Observe(pass, values);
    selector.FinishPass(pass);
  }
  MagnitudeMasker(*selector.cut()).Apply(values);
}

uint64_t PruneCount(double sparsity, uint64_t n) {
  const double k = std::nearbyint(sparsity * static_cast<double>(n));
  if (k <= 0) return 0;
  if (k >= static_cast<double>(n)) return n;
  return static_cast<uint64_t>(k);
}

}  // namespace bonsai::tensor
