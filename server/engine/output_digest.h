// What the report says about the output bytes: their SHA-256 (so the client
// can verify what it received) and their size after zstd (what the zeros
// are really worth), with fixed buffers, so a multi-GB output costs no extra
// memory.
//
// zstd is the slow half (~100 MB/s at level 1 on pruned weights here, three
// times SHA-256's time), and unlike SHA-256 it splits: the output is
// compressed as independent 8 MiB frames, as `zstd -T` does, by the job's
// thread once its SHA-256 is done and by one helper thread from the start.
// The sum of the frame sizes is the size of a valid .zst file of the output;
// it does not depend on which thread took which frame, so it is the same on
// every run.
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

// `on_progress(fraction)` is called on the caller's thread and returns false
// to stop (cancellation).
absl::StatusOr<OutputDigest> DigestOutput(std::string_view bytes,
                                          const std::function<bool(double)>& on_progress);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_OUTPUT_DIGEST_H_
