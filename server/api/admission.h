// The checks every upload stream makes as it arrives, with their rejections
// counted: a job slot at the spec, the declared size, each chunk.
#ifndef BONSAI_SERVER_API_ADMISSION_H_
#define BONSAI_SERVER_API_ADMISSION_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/api/upload_buffer.h"
#include "server/engine/job_scheduler.h"

namespace bonsai::api {

// RESOURCE_EXHAUSTED when the server is full, UNAVAILABLE when it is
// shutting down.
absl::StatusOr<std::unique_ptr<engine::JobSlot>> AdmitCall(engine::JobScheduler& scheduler);

absl::Status DeclareUpload(UploadBuffer& buffer, uint64_t declared_bytes);

// Refuses a chunk over the per-message limit or one that takes the upload
// past its limit; counts the bytes received.
absl::Status AcceptChunk(UploadBuffer& buffer, const std::string& chunk,
                         uint64_t max_chunk_bytes);

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_ADMISSION_H_
