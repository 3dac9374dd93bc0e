#include "server/engine/output_digest.h"

#include <openssl/evp.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace bonsai::engine {
namespace {

constexpr size_t kSlice = 8 << 20;
constexpr int kZstdLevel = 1;  // fast: the figure is an estimate of on-disk size

struct EvpDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct ZstdDeleter {
  void operator()(ZSTD_CCtx* ctx) const { ZSTD_freeCCtx(ctx); }
};

// The frames of the output, handed out one at a time to whichever thread
// asks; sizes add up atomically.
class FrameSizer {
 public:
  explicit FrameSizer(std::string_view bytes)
      : bytes_(bytes), frames_(std::max<size_t>(1, (bytes.size() + kSlice - 1) / kSlice)) {}

  // Compresses frames until none is left or Stop(); false on a zstd error.
  bool Work(const std::function<bool()>& after_each_frame = nullptr) {
    std::unique_ptr<ZSTD_CCtx, ZstdDeleter> ctx(ZSTD_createCCtx());
    if (!ctx) return Fail("zstd: out of memory");
    std::vector<char> sink(ZSTD_CStreamOutSize());
    for (size_t frame; !stop_ && (frame = next_++) < frames_;) {
      const size_t offset = frame * kSlice;
      const size_t length = std::min(kSlice, bytes_.size() - std::min(offset, bytes_.size()));
      ZSTD_CCtx_reset(ctx.get(), ZSTD_reset_session_only);
      ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_compressionLevel, kZstdLevel);
      ZSTD_CCtx_setPledgedSrcSize(ctx.get(), length);
      ZSTD_inBuffer in{bytes_.data() + offset, length, 0};
      uint64_t size = 0;
      for (;;) {
        ZSTD_outBuffer out{sink.data(), sink.size(), 0};
        const size_t remaining = ZSTD_compressStream2(ctx.get(), &out, &in, ZSTD_e_end);
        if (ZSTD_isError(remaining)) return Fail(ZSTD_getErrorName(remaining));
        size += out.pos;
        if (remaining == 0) break;
      }
      compressed_bytes_ += size;
      framed_bytes_ += length;
      if (after_each_frame && !after_each_frame()) return true;
    }
    return true;
  }

  void Stop() { stop_ = true; }
  uint64_t compressed_bytes() const { return compressed_bytes_; }
  uint64_t framed_bytes() const { return framed_bytes_; }
  const std::string& error() const { return error_; }

 private:
  bool Fail(std::string message) {
    if (!failed_.exchange(true)) error_ = std::move(message);
    stop_ = true;
    return false;
  }

  std::string_view bytes_;
  size_t frames_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> stop_{false}, failed_{false};
  std::atomic<uint64_t> compressed_bytes_{0}, framed_bytes_{0};
  std::string error_;  // written once, by the first failure, read after join
};

}  // namespace

absl::StatusOr<OutputDigest> DigestOutput(std::string_view bytes,
                                          const std::function<bool(double)>& on_progress) {
  std::unique_ptr<EVP_MD_CTX, EvpDeleter> sha(EVP_MD_CTX_new());
  if (!sha || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("could not set up SHA-256");
  }
  FrameSizer sizer(bytes);
  std::thread helper([&sizer] { sizer.Work(); });

  // Progress counts both halves of the work: hashed bytes and framed bytes.
  uint64_t hashed = 0;
  bool cancelled = false;
  const auto report = [&]() {
    const double total = 2.0 * std::max<size_t>(bytes.size(), 1);
    if (on_progress && !on_progress(double(hashed + sizer.framed_bytes()) / total)) {
      cancelled = true;
      sizer.Stop();
    }
    return !cancelled;
  };
  for (size_t offset = 0; offset < bytes.size() && !cancelled; offset += kSlice) {
    const size_t length = std::min(kSlice, bytes.size() - offset);
    EVP_DigestUpdate(sha.get(), bytes.data() + offset, length);
    hashed += length;
    report();
  }
  if (!cancelled) sizer.Work(report);
  helper.join();
  if (cancelled) return absl::CancelledError("the job was cancelled");
  if (!sizer.error().empty()) return absl::InternalError(absl::StrCat("zstd: ", sizer.error()));

  OutputDigest digest;
  digest.zstd_bytes = sizer.compressed_bytes();
  unsigned char hash[EVP_MAX_MD_SIZE];
  unsigned int hash_length = 0;
  EVP_DigestFinal_ex(sha.get(), hash, &hash_length);
  digest.sha256_hex = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(hash), hash_length));
  return digest;
}

}  // namespace bonsai::engine
