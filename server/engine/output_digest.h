// What the report says about the output bytes: their SHA-256 (so the client
// can verify what it received) and their size after zstd (what the zeros
// are really worth). Both are computed in one streaming pass with fixed
// buffers, so a multi-GB output costs no extra memory.
#ifndef BONSAI_SERVER_ENGINE_OUTPUT_DIGEST_H_
#define BONSAI_SERVER_ENGINE_OUTPUT_DIGEST_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace bonsai::engine {

struct OutputDigest {
  std::string sha256_hex;
  uint64_t zstd_bytes = 0;
};

// `on_progress(fraction)` returns false to stop (cancellation).
absl::StatusOr<OutputDigest> DigestOutput(std::string_view bytes,
                                          const std::function<bool(double)>& on_progress);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_OUTPUT_DIGEST_H_
