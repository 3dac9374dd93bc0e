#include "server/engine/output_digest.h"

#include <openssl/evp.h>
#include <zstd.h>

#include <algorithm>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/storage/allocator_tuning.h"

namespace bonsai::engine {
namespace {

constexpr int kZstdLevel = 1;  // fast: the figure is an estimate of on-disk size

EVP_MD_CTX* Ctx(void* ctx) { return static_cast<EVP_MD_CTX*>(ctx); }

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(Ctx(ctx_), EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(Ctx(ctx_)); }

void Sha256::Update(std::string_view bytes) {
  EVP_DigestUpdate(Ctx(ctx_), bytes.data(), bytes.size());
}

std::string Sha256::FinishHex() {
  unsigned char hash[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(Ctx(ctx_), hash, &length);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(hash), length));
}

ZstdFrameSizer::ZstdFrameSizer(uint64_t bytes_before)
    : queued_bytes_(std::min(bytes_before, kZstdExactBytes)), thread_([this] { Run(); }) {}

ZstdFrameSizer::~ZstdFrameSizer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void ZstdFrameSizer::Add(std::shared_ptr<const storage::SpoolFile> file, uint64_t offset,
                         uint64_t length) {
  absl::MutexLock lock(&mu_);
  const bool sampled = queued_bytes_ >= kZstdExactBytes && length >= 2 * kZstdSampleBytes;
  queued_bytes_ += length;
  frames_.push_back({std::move(file), offset, length, sampled});
}

absl::StatusOr<ZstdSize> ZstdFrameSizer::Total() {
  absl::MutexLock lock(&mu_);
  auto drained = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return (frames_.empty() && !busy_) || !error_.ok();
  };
  mu_.Await(absl::Condition(&drained));
  if (!error_.ok()) return error_;
  return total_;
}

void ZstdFrameSizer::Run() {
  ZSTD_CCtx* ctx = ZSTD_createCCtx();
  std::string in;
  std::vector<char> out;
  while (true) {
    Frame frame;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !frames_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (stop_) break;  // the job is gone: its remaining frames do not matter
      frame = std::move(frames_.front());
      frames_.pop_front();
      busy_ = true;
    }
    absl::Status status;
    uint64_t size = 0;
    // A sampled frame reads only its middle slice.
    const uint64_t length = frame.sampled ? kZstdSampleBytes : frame.length;
    const uint64_t offset = frame.offset + (frame.length - length) / 2;
    storage::ResizeForOverwrite(in, length);
    status = frame.file->ReadAt(offset, absl::MakeSpan(in.data(), in.size()));
    if (status.ok()) {
      // Only grows: a sampled frame after a full one keeps the larger size.
      if (const size_t bound = ZSTD_compressBound(length); out.size() < bound) {
        storage::ResizeForOverwrite(out, bound);
      }
      const size_t result =
          ctx == nullptr ? 0
                         : ZSTD_compressCCtx(ctx, out.data(), out.size(), in.data(), in.size(), kZstdLevel);
      if (ctx == nullptr || ZSTD_isError(result)) {
        status = absl::InternalError(
            absl::StrCat("zstd: ", ctx == nullptr ? "out of memory" : ZSTD_getErrorName(result)));
      } else {
        // Rounded up: an estimate never claims more than the sample showed.
        size = frame.sampled ? (uint64_t{result} * frame.length + length - 1) / length : result;
      }
    }
    absl::MutexLock lock(&mu_);
    busy_ = false;
    total_.bytes += size;
    total_.estimated |= frame.sampled;
    if (!status.ok() && error_.ok()) error_ = status;
  }
  ZSTD_freeCCtx(ctx);
}

}  // namespace bonsai::engine
