#include "server/engine/output_digest.h"

#include <openssl/evp.h>
#include <zstd.h>

#include <memory>
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

}  // namespace

absl::StatusOr<OutputDigest> DigestOutput(std::string_view bytes,
                                          const std::function<bool(double)>& on_progress) {
  std::unique_ptr<EVP_MD_CTX, EvpDeleter> sha(EVP_MD_CTX_new());
  std::unique_ptr<ZSTD_CCtx, ZstdDeleter> zstd(ZSTD_createCCtx());
  if (!sha || !zstd || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("could not set up SHA-256 / zstd");
  }
  ZSTD_CCtx_setParameter(zstd.get(), ZSTD_c_compressionLevel, kZstdLevel);
  ZSTD_CCtx_setPledgedSrcSize(zstd.get(), bytes.size());

  std::vector<char> sink(ZSTD_CStreamOutSize());
  OutputDigest digest;
  size_t offset = 0;
  do {
    const size_t length = std::min(kSlice, bytes.size() - offset);
    const bool last = offset + length == bytes.size();
    EVP_DigestUpdate(sha.get(), bytes.data() + offset, length);
    ZSTD_inBuffer in{bytes.data() + offset, length, 0};
    const ZSTD_EndDirective mode = last ? ZSTD_e_end : ZSTD_e_continue;
    for (;;) {
      ZSTD_outBuffer out{sink.data(), sink.size(), 0};
      const size_t remaining = ZSTD_compressStream2(zstd.get(), &out, &in, mode);
      if (ZSTD_isError(remaining)) {
        return absl::InternalError(absl::StrCat("zstd: ", ZSTD_getErrorName(remaining)));
      }
      digest.zstd_bytes += out.pos;
      if (last ? remaining == 0 : in.pos == in.size) break;
    }
    offset += length;
    if (on_progress && !on_progress(bytes.empty() ? 1.0 : double(offset) / bytes.size())) {
      return absl::CancelledError("the job was cancelled");
    }
  } while (offset < bytes.size());

  unsigned char hash[EVP_MAX_MD_SIZE];
  unsigned int hash_length = 0;
  EVP_DigestFinal_ex(sha.get(), hash, &hash_length);
  digest.sha256_hex = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(hash), hash_length));
  return digest;
}

}  // namespace bonsai::engine
