// Packed storage for one safetensors tensor: the encodings a method's
// PackingHint asks for, as plain safetensors tensors plus a JSON description
// for "__metadata__". client/python/bonsai/packing.py is the reader and
// documents the layout for users; the two must change together.
//
//   bitmask  <name>.bitmask U8 [ceil(count/8)]: bit i (bit i%8 of byte i/8,
//            least significant first) is set when element i is not +0.0;
//            <name>.values (own dtype) [nnz]: those elements in order.
//   nm       groups of m along the reduction axis. Rows are the tensor with
//            that axis moved last, [rows, R]; each row has G = R/m groups.
//            <name>.values (own dtype) [rows, G, n], <name>.indices U8
//            [rows, G, n] (position inside the group, ascending);
//            <name>.tail (own dtype) [rows, R - G*m] when R is not a multiple
//            of m: the tail as the method left it.
//   binary   <name>.signs U8 [ceil(count/8)], bit order as bitmask, set for
//            negative; <name>.scales F32 [channels] along the output axis
//            (one channel when the tensor has no layout). Value = ±scale.
//   ternary  <name>.codes U8 [ceil(count/4)], 2 bits per element (element i
//            at bits 2*(i%4)): 0 → +0.0, 1 → +scale, 2 → -scale, 3 → -0.0;
//            <name>.scales as binary.
// Every encoding reproduces the dense bytes exactly; a tensor whose stored
// values do not fit its hinted encoding exactly, or whose packed form is not
// smaller, stays dense.
#ifndef BONSAI_SERVER_FORMATS_SAFETENSORS_PACKING_H_
#define BONSAI_SERVER_FORMATS_SAFETENSORS_PACKING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/formats/model.h"
#include "server/formats/safetensors_header.h"

namespace bonsai::formats {

struct PackedPart {
  std::string suffix;  // appended to the tensor's name, e.g. ".bitmask"
  std::string dtype;   // safetensors spelling
  std::vector<int64_t> shape;
  std::string bytes;
  std::string name;    // when set, the part's whole name instead (GPTQ's "qweight")

  std::string NameFor(const std::string& tensor) const { return name.empty() ? tensor + suffix : name; }
};

struct PackedTensor {
  nlohmann::json description;  // name, shape, dtype, encoding, axis, parts
  std::vector<PackedPart> parts;

  uint64_t stored_bytes() const;
};

// The packed form of `entry` whose dense bytes are at `data`, or nullopt when
// it stays dense (see above).
std::optional<PackedTensor> PackSafetensor(const SafetensorsEntry& entry,
                                           const unsigned char* data,
                                           const std::optional<WeightLayout>& layout,
                                           const PackingHint& hint);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_SAFETENSORS_PACKING_H_
