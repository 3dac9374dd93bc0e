// Gram matrices X^T X of layer inputs, the statistics Wanda and SparseGPT
// work from, accumulated from bytes in any float dtype.
#ifndef BONSAI_SERVER_TENSOR_GRAM_H_
#define BONSAI_SERVER_TENSOR_GRAM_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "server/tensor/dtype.h"

namespace bonsai::tensor {

// gram (d x d, row-major) += X^T X for the n x d rows stored at `rows` in
// `dtype`. Rows are decoded a slice at a time, so a large activation tensor
// never exists in float32 beside its bytes all at once.
absl::Status AddRowsToGram(DType dtype, const char* rows, int64_t n, int64_t d,
                           absl::Span<float> gram);

// gram += the matrix of gram.size() values stored at `data` in `dtype`.
absl::Status AddEncodedMatrix(DType dtype, const char* data, absl::Span<float> gram);

bool AllFinite(absl::Span<const float> values);

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_GRAM_H_
