#include "server/tensor/magnitude_histogram.h"

#include "server/tensor/magnitude_cut.h"

namespace bonsai::tensor {

MagnitudeHistogram MagnitudeHistogram::Coarse() { return MagnitudeHistogram(false, 0, 1u << 15); }

MagnitudeHistogram MagnitudeHistogram::Fine(uint32_t bucket) {
  return MagnitudeHistogram(true, bucket, 1u << 16);
}

void MagnitudeHistogram::Add(absl::Span<const float> values) {
  uint64_t* hist = counts_.data();
  if (!fine_) {
    for (float v : values) ++hist[MagnitudeBits(v) >> 16];
    total_ += values.size();
    return;
  }
  uint64_t added = 0;
  for (float v : values) {
    const uint32_t bits = MagnitudeBits(v);
    if ((bits >> 16) == bucket_) {
      ++hist[bits & 0xffffu];
      ++added;
    }
  }
  total_ += added;
}

void MagnitudeHistogram::ExportSparse(std::vector<uint32_t>& values,
                                      std::vector<uint64_t>& counts) const {
  values.clear();
  counts.clear();
  for (uint32_t b = 0; b < counts_.size(); ++b) {
    if (counts_[b] == 0) continue;
    values.push_back(b);
    counts.push_back(counts_[b]);
  }
}

}  // namespace bonsai::tensor
