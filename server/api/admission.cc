#include "server/api/admission.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/observability/metrics.h"

namespace bonsai::api {

namespace {

// The metric's label for each refusal reason (bonsai_rejected_total{reason}).
const char* RejectedLabel(engine::ErrorReason reason) {
  switch (reason) {
    case engine::ErrorReason::kQueueFull: return "queue_full";
    case engine::ErrorReason::kPeerLimit: return "peer_limit";
    case engine::ErrorReason::kModelTooLarge: return "too_large";
    case engine::ErrorReason::kSpoolFull: return "spool_full";
    case engine::ErrorReason::kShuttingDown: return "shutting_down";
    case engine::ErrorReason::kInvalidSpec:
    case engine::ErrorReason::kInvalidModel: break;
  }
  return "other";
}

}  // namespace

absl::Status Refused(absl::Status status, engine::ErrorReason reason) {
  observability::RecordRejected(RejectedLabel(reason));
  return engine::WithReason(std::move(status), reason);
}

absl::StatusOr<std::unique_ptr<AdmittedJob>> AdmitCall(engine::JobScheduler& scheduler,
                                                       PeerLimits& peers,
                                                       const std::string& peer_address) {
  // A draining server says so first: the client retries elsewhere at once,
  // whatever its own count here.
  if (scheduler.closed()) {
    return Refused(
        absl::UnavailableError(
            "the server is shutting down and takes no new jobs; retry on another replica"),
        engine::ErrorReason::kShuttingDown);
  }
  // The peer's place first, so that a client over its cap never holds a
  // server slot, even for a moment, that another client could have had.
  auto job = std::make_unique<AdmittedJob>();
  auto peer = peers.Admit(peer_address);
  if (!peer.ok()) {
    return Refused(peer.status(), engine::ErrorReason::kPeerLimit);
  }
  job->peer = *std::move(peer);
  auto slot = scheduler.Admit();
  if (!slot.ok()) {
    return Refused(slot.status(), absl::IsUnavailable(slot.status())
                                      ? engine::ErrorReason::kShuttingDown
                                      : engine::ErrorReason::kQueueFull);
  }
  job->slot = *std::move(slot);
  return job;
}

void ArmJobDeadline(const ServiceContext& context, const std::shared_ptr<AbortableCall>& call) {
  const double seconds = context.options.max_job_seconds;
  if (seconds <= 0 || context.deadlines == nullptr) return;
  context.deadlines->AbortAt(
      call, absl::Now() + absl::Seconds(seconds),
      absl::DeadlineExceededError(absl::StrCat(
          "the job ran longer than this server's limit of ", seconds,
          " s from admission to its last byte (--max_job_seconds); send the upload at once and "
          "read the output as it comes, split the model into smaller jobs, or use a server with "
          "a larger limit")));
}

}  // namespace bonsai::api
