// Packed ONNX output for quantized weights (Packing::kQuantized), in the two
// forms onnxruntime runs:
//   8 bits: the codes as a UINT8 initializer "<w>_quantized" of the weight's
//     shape, "<w>_scale" FLOAT and "<w>_zero_point" UINT8, and a
//     DequantizeLinear node at the head of the graph whose output is the
//     weight's own name, so every consumer is unchanged. Per output channel
//     (axis = the output axis, opset >= 13) when the grids span whole rows;
//     blocked along the reduction axis (opset 21's block_size) for a 2-D
//     MatMul/Gemm weight with groups.
//   4 bits, MatMul weights only: each MatMul that reads the weight becomes
//     com.microsoft MatMulNBits (K, N, bits 4, block_size = the group size, a
//     power of two >= 16) with the layout onnxruntime's own 4-bit quantizer
//     writes: B UINT8 [N, ceil(K / block), block / 2] (two codes a byte, the
//     lower k in the low nibble), scales FLOAT [N * blocks], zero_points
//     UINT8 [N * ceil(blocks / 2)] (same nibble order; left out for
//     symmetric grids, whose zero point is the default 8).
// Both decode to scale * (code - zero), the dense output's values exactly.
// 2 and 3 bits have no onnxruntime form and are refused, as are weights in
// another dtype than FLOAT, in external data or in Constant nodes.
#ifndef BONSAI_SERVER_FORMATS_ONNX_QUANTIZED_H_
#define BONSAI_SERVER_FORMATS_ONNX_QUANTIZED_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "onnx/onnx_pb.h"
#include "server/formats/model.h"

namespace bonsai::formats {

struct OnnxQuantizedForm {
  std::vector<onnx::TensorProto> initializers;
  onnx::NodeProto dequantize;  // 8 bits
  bool matmul_nbits = false;   // 4 bits: attributes and inputs of MatMulNBits
  int64_t k = 0, n = 0, block_size = 0;
  uint64_t stored_bytes = 0;  // of the new initializers
  int64_t opset_needed = 0;   // of the default domain
};

// What can be told before the weight is computed: dtype, bits, role, block
// size, the opset DequantizeLinear needs. `group_size` as requested (0: per
// output channel). InvalidArgument naming the tensor and the fix.
absl::Status CheckOnnxQuantizedPacking(const TensorInfo& info, int bits, int64_t group_size,
                                       int64_t default_opset);

// Checks the above and the opset and builds the replacement.
absl::StatusOr<OnnxQuantizedForm> QuantizeOnnxWeight(const TensorInfo& info,
                                                     absl::Span<const float> values,
                                                     const QuantGrids& grids,
                                                     int64_t default_opset);

// Puts the form into `graph` in place of the initializer `name` (which the
// caller removes): new initializers, and the DequantizeLinear node or the
// MatMul nodes rewritten. InvalidArgument when a 4-bit weight has a consumer
// that is not input B of a MatMul in that graph.
absl::Status ApplyOnnxQuantizedForm(onnx::ModelProto& model, onnx::GraphProto& graph,
                                    const std::string& name, const OnnxQuantizedForm& form);

// The ir_version and default-domain opset of a model.
int64_t DefaultOpset(const onnx::ModelProto& model);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_QUANTIZED_H_
