// The safetensors header: an 8-byte little-endian length, then that many
// bytes of JSON naming every tensor's dtype, shape and byte span in the data
// area that follows. Everything about an upload that could be hostile is in
// here, so it is validated completely before any tensor byte is touched.
#ifndef BONSAI_SERVER_FORMATS_SAFETENSORS_HEADER_H_
#define BONSAI_SERVER_FORMATS_SAFETENSORS_HEADER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/tensor/dtype.h"

namespace bonsai::formats {

// Larger headers are refused: real ones are kilobytes to a few megabytes,
// and the length is read before anything else can be checked.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;  // as written, e.g. "BF16", "I64"
  tensor::DType dtype = tensor::DType::kOther;
  size_t element_size = 0;
  std::vector<int64_t> shape;
  uint64_t count = 0;
  uint64_t begin = 0;  // byte offsets relative to the data area
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_start = 0;  // 8 + header length
  std::vector<SafetensorsEntry> entries;  // in data order (begin, then name)
  nlohmann::json metadata;  // "__metadata__" as written, or null
};

// True when the bytes have the safetensors shape: a JSON object right after
// the length. Says nothing about validity.
bool LooksLikeSafetensors(std::string_view file);

// Parses and validates the header against the file's size. InvalidArgument
// with what is wrong and what to do otherwise.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view file);
// The same from the file's first bytes (at least the 8-byte length and the
// header it announces) and the whole file's size, for files read in pieces.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view head,
                                                         uint64_t file_size);
// The header's JSON length from the file's first 8 bytes, checked against
// the limit and the file's size.
absl::StatusOr<uint64_t> SafetensorsHeaderLength(std::string_view first8, uint64_t file_size);

// The element size of a safetensors dtype name; 0 when unknown or sub-byte.
size_t SafetensorsElementSize(std::string_view dtype_name);

// Our float dtype for a safetensors dtype name (kOther for the rest).
tensor::DType DTypeFromSafetensors(std::string_view dtype_name);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_SAFETENSORS_HEADER_H_
