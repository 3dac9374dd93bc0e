#include "server/api/admission.h"

#include "absl/strings/str_cat.h"
#include "server/observability/metrics.h"

namespace bonsai::api {

absl::StatusOr<std::unique_ptr<engine::JobSlot>> AdmitCall(engine::JobScheduler& scheduler) {
  auto slot = scheduler.Admit();
  if (!slot.ok()) {
    observability::RecordRejected(absl::IsUnavailable(slot.status()) ? "shutting_down"
                                                                     : "queue_full");
  }
  return slot;
}

absl::Status DeclareUpload(UploadBuffer& buffer, uint64_t declared_bytes) {
  absl::Status status = buffer.Declare(declared_bytes);
  if (!status.ok()) observability::RecordRejected("too_large");
  return status;
}

absl::Status AcceptChunk(UploadBuffer& buffer, const std::string& chunk,
                         uint64_t max_chunk_bytes) {
  if (chunk.size() > max_chunk_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a chunk of ", chunk.size(), " bytes is larger than the ", max_chunk_bytes,
        " bytes this server accepts; send 1 MiB chunks"));
  }
  absl::Status status = buffer.Append(chunk);
  if (!status.ok()) {
    if (absl::IsResourceExhausted(status)) observability::RecordRejected("too_large");
    return status;
  }
  observability::RecordReceivedBytes(chunk.size());
  return absl::OkStatus();
}

}  // namespace bonsai::api
