#include "server/tensor/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace bonsai::tensor {

static_assert(std::endian::native == std::endian::little,
              "bonsai reads little-endian tensor data in place");

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF64: return "F64";
    case DType::kOther: return "OTHER";
  }
  return "OTHER";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kF64: return 8;
    case DType::kOther: return 0;
  }
  return 0;
}

bool IsFloating(DType dtype) { return dtype != DType::kOther; }

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise it
      int shift = 0;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        ++shift;
      }
      mantissa &= 0x3ffu;
      bits = sign | ((127 - 15 - shift + 1) << 23) | (mantissa << 13);
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t FloatToHalf(float value) {
  const uint32_t f = std::bit_cast<uint32_t>(value);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t abs = f & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow
  if (abs < 0x38800000u) {  // subnormal or zero in half
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14 + (112 - exponent) ... in [14, 24]
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = ((abs >> 13) - ((127 - 15) << 10));
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

float BFloat16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t FloatToBFloat16(float value) {
  uint32_t f = std::bit_cast<uint32_t>(value);
  if ((f & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((f >> 16) | 0x40u);
  f += 0x7fffu + ((f >> 16) & 1u);
  return static_cast<uint16_t>(f >> 16);
}

absl::Status DecodeToFloat(DType dtype, const void* src, size_t count,
                           absl::Span<float> dst) {
  if (dst.size() < count) {
    return absl::InternalError("DecodeToFloat: destination too small");
  }
  const auto* bytes = static_cast<const unsigned char*>(src);
  switch (dtype) {
    case DType::kF32:
      // A zero-element tensor decodes into an empty span whose data() may be
      // null, and memcpy's pointers must be valid even for zero bytes.
      if (count > 0) std::memcpy(dst.data(), bytes, count * 4);
      return absl::OkStatus();
    case DType::kF64:
      for (size_t i = 0; i < count; ++i) {
        double d;
        std::memcpy(&d, bytes + i * 8, 8);
        dst[i] = static_cast<float>(d);
      }
      return absl::OkStatus();
    case DType::kF16:
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + i * 2, 2);
        dst[i] = dtype == DType::kF16 ? HalfToFloat(h) : BFloat16ToFloat(h);
      }
      return absl::OkStatus();
    case DType::kOther:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("cannot decode dtype ", std::string(DTypeName(dtype))));
}

absl::Status EncodeFromFloat(DType dtype, absl::Span<const float> src,
                             void* dst) {
  auto* bytes = static_cast<unsigned char*>(dst);
  switch (dtype) {
    case DType::kF32:
      if (!src.empty()) std::memcpy(bytes, src.data(), src.size() * 4);  // as in DecodeToFloat
      return absl::OkStatus();
    case DType::kF64:
      for (size_t i = 0; i < src.size(); ++i) {
        const double d = src[i];
        std::memcpy(bytes + i * 8, &d, 8);
      }
      return absl::OkStatus();
    case DType::kF16:
    case DType::kBF16:
      for (size_t i = 0; i < src.size(); ++i) {
        const uint16_t h =
            dtype == DType::kF16 ? FloatToHalf(src[i]) : FloatToBFloat16(src[i]);
        std::memcpy(bytes + i * 2, &h, 2);
      }
      return absl::OkStatus();
    case DType::kOther:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("cannot encode dtype ", std::string(DTypeName(dtype))));
}

absl::Status EncodeChangedFromFloat(DType dtype, absl::Span<const float> src,
                                    void* dst) {
  if (dtype == DType::kF32) return EncodeFromFloat(dtype, src, dst);
  const size_t width = DTypeSize(dtype);
  if (width == 0) return EncodeFromFloat(dtype, src, dst);
  auto* bytes = static_cast<unsigned char*>(dst);
  for (size_t i = 0; i < src.size(); ++i) {
    float current;
    if (auto s = DecodeToFloat(dtype, bytes + i * width, 1, absl::MakeSpan(&current, 1));
        !s.ok()) {
      return s;
    }
    if (std::bit_cast<uint32_t>(current) == std::bit_cast<uint32_t>(src[i])) continue;
    if (auto s = EncodeFromFloat(dtype, src.subspan(i, 1), bytes + i * width); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace bonsai::tensor
