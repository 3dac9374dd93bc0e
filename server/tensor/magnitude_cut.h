// Where a magnitude selection cuts, and the bit view of |w| it is made in.
#ifndef BONSAI_SERVER_TENSOR_MAGNITUDE_CUT_H_
#define BONSAI_SERVER_TENSOR_MAGNITUDE_CUT_H_

#include <bit>
#include <cstdint>

namespace bonsai::tensor {

// |w| of an IEEE float orders like its bit pattern with the sign cleared
// (NaNs above infinity), so selections compare integers.
inline uint32_t MagnitudeBits(float v) { return std::bit_cast<uint32_t>(v) & 0x7fffffffu; }

// Every |w| whose bits are below `threshold_bits` is pruned, and so are the
// first `ties_to_prune` elements whose bits equal it.
struct MagnitudeCut {
  uint32_t threshold_bits = 0;
  uint64_t ties_to_prune = 0;
  bool prune_nothing = true;

  static MagnitudeCut Nothing() { return {}; }
  static MagnitudeCut Everything() { return {0xffffffffu, 0, false}; }
};

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_MAGNITUDE_CUT_H_
