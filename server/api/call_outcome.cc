#include "server/api/call_outcome.h"

namespace bonsai::api {

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
