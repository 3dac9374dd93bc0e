// What a compression job does to an uploaded model, minus the method: read
// every tensor, compare a change with the stored values, write it back with
// a packing hint, serialize. Shared by the safetensors and ONNX targets so
// both formats face the same sequence of calls as in engine/compression_job.
#ifndef BONSAI_TESTS_FUZZ_MODEL_ROUNDTRIP_H_
#define BONSAI_TESTS_FUZZ_MODEL_ROUNDTRIP_H_

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/formats/model.h"
#include "server/tensor/float_tensor.h"

namespace bonsai::fuzz {

// Values each packing can take, so the packed writers run on tensors they
// accept as well as on ones they refuse: every other value zeroed (bitmask),
// the last two of each 4 zeroed (2:4), ±s (binary), {-s, 0, +s} (ternary).
inline formats::PackingHint ShapeForPacking(unsigned kind, tensor::FloatTensor& values) {
  const float s = values.size() > 0 ? std::fabs(values.values[0]) : 1.0f;
  for (size_t i = 0; i < values.size(); ++i) {
    float& v = values.values[i];
    switch (kind % 5) {
      case 0: break;
      case 1: if (i % 2) v = 0.0f; break;
      case 2: if (i % 4 >= 2) v = 0.0f; break;
      case 3: v = std::signbit(v) ? -s : s; break;
      case 4: v = i % 3 == 0 ? 0.0f : (std::signbit(v) ? -s : s); break;
    }
  }
  switch (kind % 5) {
    case 1: return {formats::Packing::kSparseBitmask, 0, 0, {}};
    case 2: return {formats::Packing::kNM, 2, 4, {}};
    case 3: return {formats::Packing::kBinary, 0, 0, {s}};
    case 4: return {formats::Packing::kTernary, 0, 0, {s}};
  }
  return {};
}

// With `identity`, values are written back unchanged and the dense output
// must equal `expected` (when given): a write that changes nothing changes
// no byte. Otherwise tensor i gets packing kind i + salt, and `packed`
// selects the packed serialization. Any disagreement aborts, as a finding.
inline void RoundTrip(formats::Model& model, bool identity, unsigned salt, bool packed,
                      const std::string* expected) {
  tensor::FloatTensor values;  // reused across tensors, as a job does
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    if (!model.ReadInto(i, values).ok()) continue;  // e.g. an integer tensor
    if (values.size() != model.tensors()[i].params) std::abort();
    const auto same = model.CompareWithStored(i, values.span());  // NaN-proof: counts only
    if (!same.ok() || same->nonzero_before != same->nonzero_after) std::abort();
    const formats::PackingHint hint =
        identity ? formats::PackingHint{} : ShapeForPacking(i + salt, values);
    if (!model.CompareWithStored(i, values.span()).ok()) std::abort();
    if (!model.Write(i, values, hint).ok()) std::abort();
  }
  auto out = model.Serialize({.packed = !identity && packed});
  if (identity && expected != nullptr && (!out.ok() || *out != *expected)) std::abort();
}

}  // namespace bonsai::fuzz

#endif  // BONSAI_TESTS_FUZZ_MODEL_ROUNDTRIP_H_
