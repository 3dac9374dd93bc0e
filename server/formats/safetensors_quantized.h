// Packed safetensors for quantized weights (Packing::kQuantized), in the two
// layouts that runtimes load without bonsai. client/python/bonsai/packing.py
// reads both back and documents them for users; the three must agree.
//
// compressed-tensors "pack-quantized" (vLLM, llm-compressor), for a tensor
// <w> (e.g. "model.layers.0.mlp.up_proj.weight") viewed as rows x cols
// (output channels x reduction columns, Conv in * kh * kw), p = 32 / bits
// codes per int32 word (10 at 3 bits, the top 2 bits unused):
//   <w>_packed     I32 [rows, ceil(cols / p)]: code of (r, c) in word c / p at
//                  bits (c % p) * bits, least significant first; a code is
//                  the signed value + 2^(bits-1), i.e. bonsai's unsigned code
//   <w>_scale      F32 [rows, groups]
//   <w>_zero_point I32 [ceil(rows / p), groups]: zero codes packed the same
//                  way along the rows (asymmetric only; symmetric grids have
//                  the signed zero point 0)
//   <w>_shape      I32 [rank]: the dense shape
// GPTQ (AutoGPTQ's "gptq" checkpoint format), names from <prefix>weight:
//   <prefix>qweight I32 [ceil(cols / p), rows]: codes packed along the columns
//   <prefix>qzeros  I32 [groups, ceil(rows / p)]: (zero - 1) mod 2^bits packed
//                   along the rows (the format's historic offset)
//   <prefix>scales  F32 [groups, rows]
//   <prefix>g_idx   I32 [cols]: the group of each column
//   2, 4 and 8 bits only (3-bit GPTQ words straddle int32 boundaries).
// A weight is scale * (code - zero) in float32, then stored in the tensor's
// own dtype: exactly the dense output. Scales are float32 so that this holds.
#ifndef BONSAI_SERVER_FORMATS_SAFETENSORS_QUANTIZED_H_
#define BONSAI_SERVER_FORMATS_SAFETENSORS_QUANTIZED_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/formats/model.h"
#include "server/formats/safetensors_header.h"
#include "server/formats/safetensors_packing.h"

namespace bonsai::formats {

absl::StatusOr<PackedTensor> PackQuantizedSafetensor(const SafetensorsEntry& entry,
                                                     const std::optional<WeightLayout>& layout,
                                                     absl::Span<const float> values,
                                                     const QuantGrids& grids, QuantLayout format);

// What the quantization config says of one packed tensor.
struct QuantizedTensorNote {
  std::string name;
  int bits = 0;
  int64_t group_size = 0;  // 0: per output channel
  bool symmetric = false;
};

// The `quantization_config` object of config.json (and of the shard's
// "__metadata__", as a JSON string) for the packed tensors: compressed-tensors
// gets one config group per distinct (bits, group size, symmetric) targeting
// the tensors' modules; GPTQ has a single setting for the model, so mixed
// settings are InvalidArgument.
absl::StatusOr<nlohmann::json> QuantizationConfig(QuantLayout format,
                                                  const std::vector<QuantizedTensorNote>& notes);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_SAFETENSORS_QUANTIZED_H_
