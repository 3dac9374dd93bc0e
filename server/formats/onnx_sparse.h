// Packed ONNX output: sparse initializers become standard
// sparse_initializer entries (SparseTensorProto: values [NNZ] in the
// tensor's dtype, INT64 linear indices [NNZ] in ascending order, dims as the
// dense tensor), which onnx.checker accepts and runtimes expand at load.
// Only graph initializers are converted (Constant nodes stay dense), and
// only where the sparse form is smaller: NNZ * (element size + 8) < dense.
// An element counts as non-zero unless it is +0.0, so expanding restores
// the dense bytes exactly.
#ifndef BONSAI_SERVER_FORMATS_ONNX_SPARSE_H_
#define BONSAI_SERVER_FORMATS_ONNX_SPARSE_H_

#include <cstdint>
#include <optional>

#include "onnx/onnx_pb.h"

namespace bonsai::formats {

// The sparse form of a floating `dense` tensor with `count` elements, or
// nullopt when it would not be smaller.
std::optional<onnx::SparseTensorProto> SparsifyOnnxTensor(const onnx::TensorProto& dense,
                                                          uint64_t count);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_SPARSE_H_
