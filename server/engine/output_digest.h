// What the report says about the output bytes, computed while they stream:
// each file's SHA-256 (so the client can verify what it received) and the
// output's size after zstd (what the zeros are really worth).
//
// zstd is the slow half (level 1 runs at ~150 MB/s on pruned float weights
// here, SHA-256 at ~1.5 GB/s with SHA extensions), so it runs on a thread of
// its own over 8 MiB frames of the spooled output, as `zstd -T` splits a
// file: the sum of the frame sizes is the size of a valid .zst of each file,
// the same on every run.
//
// Even on its own thread, compressing everything would make zstd the slowest
// stage of a big job (a 384 MiB model: 2.7 s of zstd against ~1 s to send
// it), so past the first kZstdExactBytes of a model's output each full frame is
// estimated from its middle kZstdSampleBytes: the slice's compressed size
// scaled to the frame. Weights compress alike along a tensor, so the estimate
// lands within a fraction of a percent; it is deterministic, and the report
// says when the figure is an estimate.
#ifndef BONSAI_SERVER_ENGINE_OUTPUT_DIGEST_H_
#define BONSAI_SERVER_ENGINE_OUTPUT_DIGEST_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/storage/spool_file.h"

namespace bonsai::engine {

inline constexpr uint64_t kZstdFrameBytes = 8 << 20;
inline constexpr uint64_t kZstdExactBytes = 64 << 20;
// 256 KiB: on the bench model's output (40 sampled frames) the estimate was
// within 0.01% of exact with 1 MiB samples and within 0.002% with 256 KiB,
// at a quarter of the zstd work (an 8 GiB model: ~1.7 s of CPU, not ~7 s);
// at 128 KiB it drifted to 0.1%.
inline constexpr uint64_t kZstdSampleBytes = 256 << 10;

struct ZstdSize {
  uint64_t bytes = 0;
  bool estimated = false;  // some frames were sized from a sample
};

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view bytes);
  std::string FinishHex();  // lower-case hex; the object is spent

 private:
  void* ctx_;  // EVP_MD_CTX
};

// Compresses frames of spooled files on its own thread and adds up their
// sizes. Frames are queued as ranges, so queueing costs no memory.
class ZstdFrameSizer {
 public:
  // `bytes_before`: output of the same model that other jobs size (see
  // CompressionSpec.output_offset_bytes); it counts toward the exact prefix.
  explicit ZstdFrameSizer(uint64_t bytes_before = 0);
  ~ZstdFrameSizer();  // stops and joins
  void Add(std::shared_ptr<const storage::SpoolFile> file, uint64_t offset, uint64_t length);
  // Waits for every queued frame; the total, or the first error.
  absl::StatusOr<ZstdSize> Total();

 private:
  struct Frame {
    std::shared_ptr<const storage::SpoolFile> file;
    uint64_t offset, length;
    bool sampled;
  };
  void Run();

  absl::Mutex mu_;
  std::deque<Frame> frames_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // decides exact or sampled
  ZstdSize total_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_OUTPUT_DIGEST_H_
