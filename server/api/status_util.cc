#include "server/api/status_util.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/engine/error_reason.h"

namespace bonsai::api {

namespace {

// A hint, not a promise: the server cannot know when a slot frees, and the
// client's RetryPolicy backs off from here.
constexpr int kBusyRetryAfterMs = 1000;

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status, grpc::ServerContextBase* call) {
  if (status.ok()) return grpc::Status::OK;
  if (const std::optional<std::string> reason = engine::ReasonOf(status);
      reason.has_value() && call != nullptr) {
    call->AddTrailingMetadata("bonsai-error-reason", *reason);
    if (engine::IsBusyReason(*reason)) {
      call->AddTrailingMetadata("bonsai-retry-after-ms", absl::StrCat(kBusyRetryAfterMs));
    }
  }
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

observability::JobOutcome OutcomeOf(const absl::Status& status) {
  using observability::JobOutcome;
  switch (status.code()) {
    case absl::StatusCode::kOk: return JobOutcome::kOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return JobOutcome::kInvalid;
    case absl::StatusCode::kResourceExhausted: return JobOutcome::kRejected;
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnavailable: return JobOutcome::kCancelled;
    default: return JobOutcome::kFailed;
  }
}

void RecordCallOutcome(std::string_view method, std::string_view format,
                       const absl::Status& status) {
  observability::RecordJob(method, format, OutcomeOf(status));
}

}  // namespace bonsai::api
