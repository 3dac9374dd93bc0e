// Admission at the spec, with its rejections counted: a place under the
// client's per-peer cap and a job slot, before any byte of the upload
// (limits on the files themselves: upload_files.h).
#ifndef BONSAI_SERVER_API_ADMISSION_H_
#define BONSAI_SERVER_API_ADMISSION_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/api/active_calls.h"
#include "server/api/peer_limits.h"
#include "server/api/service_context.h"
#include "server/engine/error_reason.h"
#include "server/engine/job_scheduler.h"

namespace bonsai::api {

// Held from admission until the job's work is over; releasing it gives back
// both the job slot and the peer's place.
struct AdmittedJob {
  std::unique_ptr<PeerSlot> peer;
  std::unique_ptr<engine::JobSlot> slot;
};

// A refusal, counted once: `status` tagged with `reason` (what the client
// branches on) and bonsai_rejected_total incremented under the label the
// dashboards use for that reason, so the two can never disagree.
absl::Status Refused(absl::Status status, engine::ErrorReason reason);

// UNAVAILABLE when the server is shutting down, RESOURCE_EXHAUSTED when the
// peer is at --max_jobs_per_peer or the server is full.
absl::StatusOr<std::unique_ptr<AdmittedJob>> AdmitCall(engine::JobScheduler& scheduler,
                                                       PeerLimits& peers,
                                                       const std::string& peer_address);

// From admission, the job has --max_job_seconds to end (0: no cap); then it
// is aborted with DEADLINE_EXCEEDED naming the flag.
void ArmJobDeadline(const ServiceContext& context, const std::shared_ptr<AbortableCall>& call);

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_ADMISSION_H_
