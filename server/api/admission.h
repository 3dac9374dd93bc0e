// Admission at the spec, with its rejections counted: a job slot, before
// any byte of the upload (limits on the files themselves: upload_files.h).
#ifndef BONSAI_SERVER_API_ADMISSION_H_
#define BONSAI_SERVER_API_ADMISSION_H_

#include <memory>

#include "absl/status/statusor.h"
#include "server/engine/job_scheduler.h"

namespace bonsai::api {

// RESOURCE_EXHAUSTED when the server is full, UNAVAILABLE when it is
// shutting down.
absl::StatusOr<std::unique_ptr<engine::JobSlot>> AdmitCall(engine::JobScheduler& scheduler);

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_ADMISSION_H_
