// Packed output of quantized weights has limits of its formats (ONNX: 8-bit
// DequantizeLinear, 4-bit MatMulNBits on MatMul weights only, no 2 or 3 bits;
// the GPTQ safetensors layout: no 3 bits). They are checked once the plan
// knows which tensor gets which method, before any tensor is computed, so a
// request that cannot be stored fails in seconds with the fix in its message.
#ifndef BONSAI_SERVER_ENGINE_PACKED_QUANTIZATION_H_
#define BONSAI_SERVER_ENGINE_PACKED_QUANTIZATION_H_

#include "absl/status/status.h"
#include "server/engine/job_plan.h"
#include "server/formats/model.h"

namespace bonsai::engine {

absl::Status CheckPackedQuantization(const ValidatedSpec& spec, const CompressionPlan& plan,
                                     const formats::Model& model);

// The layout the request asks for.
formats::QuantLayout QuantLayoutOf(const v1::CompressionSpec& spec);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_PACKED_QUANTIZATION_H_
