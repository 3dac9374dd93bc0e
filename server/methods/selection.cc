#include "server/methods/selection.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace bonsai::methods {

void KeepLargestN(absl::Span<const float> scores, int n, absl::Span<bool> keep) {
  const int m = static_cast<int>(scores.size());
  // m is at most 32: counting, for each element, how many others beat it is
  // cheaper than sorting and states the tie rule directly.
  for (int i = 0; i < m; ++i) {
    int better = 0;
    for (int j = 0; j < m; ++j) {
      better += scores[j] > scores[i] || (scores[j] == scores[i] && j < i);
    }
    keep[i] = better < n;
  }
}

void PruneSmallestK(absl::Span<const float> scores, uint64_t k, std::vector<int64_t>& order,
                    absl::Span<bool> prune) {
  const size_t size = scores.size();
  std::fill(prune.begin(), prune.end(), false);
  if (k == 0) return;
  if (k >= size) {
    std::fill(prune.begin(), prune.end(), true);
    return;
  }
  order.resize(size);
  std::iota(order.begin(), order.end(), int64_t{0});
  auto before = [&](int64_t a, int64_t b) {
    return scores[a] < scores[b] || (scores[a] == scores[b] && a < b);
  };
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), before);
  // nth_element leaves the k smallest (by score, then index) in front.
  for (uint64_t i = 0; i < k; ++i) prune[order[i]] = true;
}

std::string DenseTailNote(int64_t channels, int m) {
  const int64_t tail = channels - GroupedChannels(channels, m);
  if (tail == 0) return "";
  return absl::StrCat("last ", tail, " of ", channels,
                      " input channels left dense (not a multiple of ", m, ")");
}

MethodOutcome SparsityOutcome(int64_t channels, int n, int m) {
  MethodOutcome outcome;
  if (m > 0) {
    outcome.note = DenseTailNote(channels, m);
    outcome.packing.packing = formats::Packing::kNM;
    outcome.packing.n = n;
    outcome.packing.m = m;
  } else {
    outcome.packing.packing = formats::Packing::kSparseBitmask;
  }
  return outcome;
}

}  // namespace bonsai::methods
