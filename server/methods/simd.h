// Four floats at a time through GCC/Clang vector extensions, the width of
// the SSE2 registers every x86-64 has (the build targets plain x86-64). The
// compiler at -O2 leaves most loops scalar; the one-pass methods use these
// instead to run near memory speed. Comparisons give lanes of all ones or
// zero, so selections are bit masks and the loops have no branches.
#ifndef BONSAI_SERVER_METHODS_SIMD_H_
#define BONSAI_SERVER_METHODS_SIMD_H_

#include <cstdint>
#include <cstring>

namespace bonsai::methods::simd {

using Floats = float __attribute__((vector_size(16)));
using Bits = uint32_t __attribute__((vector_size(16)));
using Masks = int32_t __attribute__((vector_size(16)));  // comparison results
inline constexpr int64_t kLanes = 4;
inline constexpr uint32_t kSignBit = 0x80000000u;

inline Bits LoadBits(const float* p) {
  Bits v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void StoreBits(float* p, Bits v) { std::memcpy(p, &v, sizeof v); }
inline Bits SplatBits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return Bits{b, b, b, b};
}
inline Floats AsFloats(Bits v) { return reinterpret_cast<Floats>(v); }
inline Bits AsBits(Floats v) { return reinterpret_cast<Bits>(v); }
inline Bits AsBits(Masks v) { return reinterpret_cast<Bits>(v); }

// data[i, i + 4) = fn(data[i, i + 4), i) over data[0, n); a last partial
// vector goes through a zero-padded copy, so fn is the only rule. fn may
// read arrays beside data at [i, i + 4): they need kLanes - 1 of slack.
template <typename Fn>
void TransformBits(float* data, int64_t n, Fn&& fn) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) StoreBits(data + i, fn(LoadBits(data + i), i));
  if (i == n) return;
  float tail[kLanes] = {};
  std::memcpy(tail, data + i, (n - i) * sizeof(float));
  StoreBits(tail, fn(LoadBits(tail), i));
  std::memcpy(data + i, tail, (n - i) * sizeof(float));
}

}  // namespace bonsai::methods::simd

#endif  // BONSAI_SERVER_METHODS_SIMD_H_
