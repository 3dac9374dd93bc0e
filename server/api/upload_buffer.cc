#include "server/api/upload_buffer.h"

#include "absl/strings/str_cat.h"

namespace bonsai::api {
namespace {

std::string Mebibytes(uint64_t bytes) {
  return absl::StrCat(bytes / (1 << 20), " MiB (", bytes, " bytes)");
}

}  // namespace

absl::Status UploadBuffer::Declare(uint64_t declared_bytes) {
  if (declared_bytes > limit_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the ", what_, " is ", Mebibytes(declared_bytes), ", over this server's limit of ",
        Mebibytes(limit_), " (--", flag_, "); use a server with a larger limit"));
  }
  declared_ = declared_bytes;
  bytes_.reserve(declared_bytes);
  return absl::OkStatus();
}

absl::Status UploadBuffer::Append(std::string_view chunk) {
  const uint64_t after = bytes_.size() + chunk.size();
  if (after > limit_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the ", what_, " passed this server's limit of ", Mebibytes(limit_), " (--", flag_,
        ") while uploading; use a server with a larger limit"));
  }
  if (declared_ > 0 && after > declared_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "more ", what_, " bytes arrived than the ", declared_, " declared in the spec; "
        "declare the exact file size or leave it 0"));
  }
  bytes_.append(chunk);
  return absl::OkStatus();
}

absl::Status UploadBuffer::CheckComplete() const {
  if (declared_ > 0 && bytes_.size() != declared_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the upload ended after ", bytes_.size(), " of the ", declared_, " ", what_,
        " bytes the spec declared; the upload was cut short, send the whole file"));
  }
  return absl::OkStatus();
}

}  // namespace bonsai::api
