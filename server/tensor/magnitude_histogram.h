// Exact histograms of |w| bits that add up across jobs: the summaries a
// replica sends when one global threshold spans shards compressed on
// several replicas (CompressionSpec.exchange_global_cuts). Summed over
// every job they are the histograms of the whole model, so the cut chosen
// from them is the one a single job over all shards would choose, whatever
// the data.
//   coarse: the high 16 bits of |w| (the sign is clear: 32768 buckets);
//   fine:   the low 16 bits, of the weights in one coarse bucket.
// Sent sparse (nonzero buckets only): weights span few exponents, so a
// coarse summary is a few thousand entries, never more than 32768.
#ifndef BONSAI_SERVER_TENSOR_MAGNITUDE_HISTOGRAM_H_
#define BONSAI_SERVER_TENSOR_MAGNITUDE_HISTOGRAM_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace bonsai::tensor {

class MagnitudeHistogram {
 public:
  // Coarse: every weight, by its high 16 bits.
  static MagnitudeHistogram Coarse();
  // Fine: the weights whose high 16 bits are `bucket`, by their low 16 bits.
  static MagnitudeHistogram Fine(uint32_t bucket);

  void Add(absl::Span<const float> values);
  uint64_t total() const { return total_; }

  // The nonzero buckets in increasing order, and their counts.
  void ExportSparse(std::vector<uint32_t>& values, std::vector<uint64_t>& counts) const;
  // How many added weights fall in `bucket`.
  uint64_t count(uint32_t bucket) const { return bucket < counts_.size() ? counts_[bucket] : 0; }

 private:
  MagnitudeHistogram(bool fine, uint32_t bucket, size_t buckets)
      : fine_(fine), bucket_(bucket), counts_(buckets, 0) {}

  bool fine_;
  uint32_t bucket_;
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
};

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_MAGNITUDE_HISTOGRAM_H_
