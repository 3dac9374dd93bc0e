// The two selection rules the pruning methods share, with their tie rules
// fixed so the same input always gives the same mask:
//   - N:M: keep the n largest scores of a group; on ties the lower index is
//     kept (what sparse tensor core tooling expects to see).
//   - unstructured: prune the k smallest scores; on ties the lower index is
//     pruned, as in magnitude pruning (tensor/magnitude_select.h).
#ifndef BONSAI_SERVER_METHODS_SELECTION_H_
#define BONSAI_SERVER_METHODS_SELECTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "server/methods/method.h"

namespace bonsai::methods {

// keep[i] = whether scores[i] is among the n largest of the group.
void KeepLargestN(absl::Span<const float> scores, int n, absl::Span<bool> keep);

// prune[i] = whether scores[i] is among the k smallest. `order` is scratch.
void PruneSmallestK(absl::Span<const float> scores, uint64_t k, std::vector<int64_t>& order,
                    absl::Span<bool> prune);

// How many leading channels fall in complete groups of m.
inline int64_t GroupedChannels(int64_t channels, int m) { return channels / m * m; }

// Report note for channels that do not fill a last group of m, e.g. "last 3
// of 30 input channels left dense (not a multiple of 4)"; empty when none.
std::string DenseTailNote(int64_t channels, int m);

// The outcome of a pruning method: N:M packing and its dense-tail note when
// m > 0, an unstructured bitmask otherwise.
MethodOutcome SparsityOutcome(int64_t channels, int n, int m);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_SELECTION_H_
