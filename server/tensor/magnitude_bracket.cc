#include "server/tensor/magnitude_bracket.h"

#include <algorithm>
#include <cmath>

#include "server/tensor/run_in_parallel.h"

namespace bonsai::tensor {
namespace {

// Half-width of the bracket in standard deviations of the sample rank: the
// k-th of i.i.d. weights falls outside it about once in a million selections.
constexpr double kMarginSigmas = 5.0;
constexpr size_t kCollectBlock = 16;
constexpr uint64_t kSampleRun = 16;

}  // namespace

uint64_t MagnitudeBracket::NextRunStart(uint64_t run_start) {
  if (stride_ == 1) return run_start + kSampleRun;
  // splitmix64, scaled to [0, 2 * stride_ - 1) by a multiply, not a divide:
  // gaps of mean stride_ runs that do not line up with tensor rows.
  uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const uint64_t span = 2 * stride_ - 1;
  const uint64_t runs = 1 + static_cast<uint64_t>((static_cast<unsigned __int128>(z) * span) >> 64);
  return run_start + runs * kSampleRun;
}

// Runs of kSampleRun neighbours (one cache line of float32) are sampled
// together: the sample costs a few thousand cache misses, not one per value.
void MagnitudeBracket::Sample(absl::Span<const float> values) {
  const uint64_t begin = observed_, end = observed_ + values.size();
  while (next_sample_ < end) {
    sample_.push_back(MagnitudeBits(values[next_sample_ - begin]));
    if (++next_sample_ - run_start_ < kSampleRun) continue;
    run_start_ = next_sample_ = NextRunStart(run_start_);
    if (sample_.size() >= 2 * limits_.sample_target) {  // whole runs only
      const size_t runs = sample_.size() / kSampleRun;
      for (size_t r = 0; 2 * r < runs; ++r) {
        std::copy_n(sample_.begin() + 2 * r * kSampleRun, kSampleRun,
                    sample_.begin() + r * kSampleRun);
      }
      sample_.resize((runs + 1) / 2 * kSampleRun);
      stride_ *= 2;
      sample_is_everything_ = false;
    }
  }
  observed_ = end;
}

void MagnitudeBracket::SettleFrom(std::vector<uint32_t>& values, uint64_t rank, uint64_t below) {
  const auto nth = values.begin() + static_cast<std::ptrdiff_t>(rank - 1);
  std::nth_element(values.begin(), nth, values.end());
  const uint32_t threshold = *nth;
  // Everything before nth is <= threshold; the smaller ones are pruned
  // outright, the rest of the k are ties.
  const uint64_t less =
      below + static_cast<uint64_t>(std::count_if(values.begin(), nth,
                                                  [threshold](uint32_t b) { return b < threshold; }));
  cut_ = MagnitudeCut{threshold, k_ - less, false};
}

void MagnitudeBracket::FinishSample(uint64_t k) {
  k_ = k;
  if (k == 0) {
    cut_ = MagnitudeCut::Nothing();
  } else if (k >= observed_) {
    cut_ = MagnitudeCut::Everything();
  } else if (sample_is_everything_) {
    SettleFrom(sample_, k, 0);
  } else {
    const double s = static_cast<double>(sample_.size());
    const double q = static_cast<double>(k) / static_cast<double>(observed_);
    const double margin = kMarginSigmas * std::sqrt(s * q * (1.0 - q)) + 8.0;
    const double low_rank = std::floor(q * s - margin), high_rank = std::ceil(q * s + margin);
    // Two linear-time selections: the high rank among what lies above the low.
    auto at = sample_.begin();
    if (low_rank > 0) {
      at += static_cast<std::ptrdiff_t>(low_rank);
      std::nth_element(sample_.begin(), at, sample_.end());
      low_ = *at;
    }
    if (high_rank < s) {
      const auto high_at = sample_.begin() + static_cast<std::ptrdiff_t>(high_rank);
      std::nth_element(at, high_at, sample_.end());
      high_ = *high_at;
    } else {
      high_ = 0xffffffffu;
    }
  }
  sample_ = {};
}

namespace {

// What one stretch of weights holds relative to the bracket.
struct Collected {
  uint64_t below = 0, inside = 0;
  std::vector<uint32_t> bits;  // the first `max_inside` inside, in order
};

void CollectRange(const float* data, size_t length, uint32_t low, uint32_t high,
                  uint64_t max_inside, Collected& out) {
  const uint32_t width = high - low;
  // One unsigned compare tests low <= bits <= high.
  const auto keep = [&](const float* block, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      const uint32_t bits = MagnitudeBits(block[i]);
      if (bits - low > width) continue;
      if (++out.inside <= max_inside) out.bits.push_back(bits);
    }
  };
  size_t i = 0;
  for (; i + kCollectBlock <= length; i += kCollectBlock) {
    uint32_t below = 0, inside = 0;
    for (size_t j = 0; j < kCollectBlock; ++j) {
      const uint32_t bits = MagnitudeBits(data[i + j]);
      below += bits < low;
      inside += bits - low <= width;
    }
    out.below += below;
    if (inside > 0) keep(data + i, kCollectBlock);
  }
  for (size_t j = i; j < length; ++j) out.below += MagnitudeBits(data[j]) < low;
  keep(data + i, length - i);
}

}  // namespace

// Long spans are split over two cores (run_in_parallel.h); only counts and the
// set of collected values matter, not their order.
void MagnitudeBracket::Collect(absl::Span<const float> values) {
  if (cut_) return;
  const size_t middle = values.size() / 2;
  Collected parts[2];
  RunInParallel(
      values.size() >= kWorthASecondCore,
      [&] { CollectRange(values.data(), middle, low_, high_, limits_.max_inside, parts[0]); },
      [&] {
        CollectRange(values.data() + middle, values.size() - middle, low_, high_,
                     limits_.max_inside, parts[1]);
      });
  for (Collected& part : parts) {
    below_ += part.below;
    inside_ += part.inside;
    if (inside_ <= limits_.max_inside) {
      inside_bits_.insert(inside_bits_.end(), part.bits.begin(), part.bits.end());
    }
  }
}

void MagnitudeBracket::FinishCollect() {
  if (cut_) return;
  if (k_ > below_ && k_ - below_ <= inside_ && inside_ <= limits_.max_inside) {
    SettleFrom(inside_bits_, k_ - below_, below_);
  }
  inside_bits_ = {};
}

}  // namespace bonsai::tensor
